"""Policy stores: where chunks and their vectors live, and how they are searched."""
