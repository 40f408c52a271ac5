"""The search service: the product vector index (Qdrant Edge or qdrant-client) and its gRPC server and client."""
