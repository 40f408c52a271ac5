"""The model and search services: each a plain Python class plus a thin gRPC server."""
