// The query service over gRPC-Web, through the client generated from proto/ (src/gen, `npm run generate`).
// Same origin as the page: the query service serves both, so there is no CORS and no base URL to configure.
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { timestampDate, timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { QueryService } from "./gen/hourglass/v1/query_pb.js";

export type QueryClient = Client<typeof QueryService>;

/** A client whose every call carries `key` as `authorization: Bearer <key>`, as the service asks. */
export function queryClient(key: string): QueryClient {
  const transport = createGrpcWebTransport({
    baseUrl: window.location.origin,
    interceptors: [
      (next) => (request) => {
        request.header.set("authorization", `Bearer ${key}`);
        return next(request);
      },
    ],
  });
  return createClient(QueryService, transport);
}

/** What went wrong, in the terms the page shows. */
export type Failure =
  | { kind: "unauthenticated"; message: string }
  | { kind: "permission"; message: string }
  | { kind: "unavailable"; message: string }
  | { kind: "invalid"; message: string }
  | { kind: "other"; message: string };

export function classify(error: unknown): Failure {
  const connectError = ConnectError.from(error);
  switch (connectError.code) {
    case Code.Unauthenticated:
      return { kind: "unauthenticated", message: connectError.rawMessage };
    case Code.PermissionDenied:
      return { kind: "permission", message: connectError.rawMessage };
    case Code.Unavailable:
      return { kind: "unavailable", message: connectError.rawMessage };
    case Code.InvalidArgument:
    case Code.OutOfRange:
      return { kind: "invalid", message: connectError.rawMessage };
    default:
      // fetch() itself failing (server down, connection refused) reaches us as a TypeError cause.
      if (connectError.cause instanceof TypeError) {
        return { kind: "unavailable", message: connectError.cause.message };
      }
      return { kind: "other", message: `${Code[connectError.code]}: ${connectError.rawMessage}` };
  }
}

export const toTimestamp = (date: Date): Timestamp => timestampFromDate(date);
export const fromTimestamp = (timestamp: Timestamp | undefined): Date | undefined =>
  timestamp === undefined ? undefined : timestampDate(timestamp);
