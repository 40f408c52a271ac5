"""Generated gRPC contracts (see protos/); do not edit the *_pb2 files by hand."""
