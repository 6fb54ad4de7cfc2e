"""Fakes of remote services that cannot run here; each speaks the service's real wire format."""
