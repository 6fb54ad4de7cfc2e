"""Policies in, passages out: loading, chunking, embeddings, stores, reranking, ingest."""
