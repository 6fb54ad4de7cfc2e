"""supportbot: what talks to people and ties the flow together."""
