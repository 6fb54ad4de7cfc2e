"""Rerankers: reorder a search's candidates by how well they answer the question."""
