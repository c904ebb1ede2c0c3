"""The gRPC contract hourglass.v1 (proto/hourglass/v1), generated at build time by grpcio-tools.

``event_pb2``, ``ingest_pb2``, ``ingest_pb2_grpc``, ``query_pb2`` and ``query_pb2_grpc`` are written here
when the package is built (setup.py); they are not in the repository.
"""
