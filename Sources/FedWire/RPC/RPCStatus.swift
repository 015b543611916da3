/// The status that ends every call, with gRPC's codes and a message a person can act on.
public struct RPCStatus: Sendable, Equatable, CustomStringConvertible {
    /// A gRPC status code. A struct, so that unknown codes from a newer peer survive decoding.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }

        public static let ok = Code(rawValue: 0)
        public static let cancelled = Code(rawValue: 1)
        public static let unknown = Code(rawValue: 2)
        public static let invalidArgument = Code(rawValue: 3)
        public static let deadlineExceeded = Code(rawValue: 4)
        public static let notFound = Code(rawValue: 5)
        public static let alreadyExists = Code(rawValue: 6)
        public static let permissionDenied = Code(rawValue: 7)
        public static let resourceExhausted = Code(rawValue: 8)
        public static let failedPrecondition = Code(rawValue: 9)
        public static let aborted = Code(rawValue: 10)
        public static let outOfRange = Code(rawValue: 11)
        public static let unimplemented = Code(rawValue: 12)
        public static let internalError = Code(rawValue: 13)
        public static let unavailable = Code(rawValue: 14)
        public static let dataLoss = Code(rawValue: 15)
        public static let unauthenticated = Code(rawValue: 16)

        private static let names = [
            "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
            "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
            "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
        ]
        /// "DEADLINE_EXCEEDED", or "CODE_42" for a code this version does not know.
        public var description: String { Int(rawValue) < Self.names.count ? Self.names[Int(rawValue)] : "CODE_\(rawValue)" }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String = "") {
        self.code = code
        self.message = message
    }

    public static let ok = RPCStatus(.ok)
    public var isOK: Bool { code == .ok }
    public var description: String { message.isEmpty ? "\(code)" : "\(code): \(message)" }
}

/// A call that ended with a status other than OK, thrown to the caller (or by a handler, to be
/// sent to the caller as the call's status).
public struct RPCError: Error, Sendable, Equatable, CustomStringConvertible {
    public var status: RPCStatus
    public var code: RPCStatus.Code { status.code }
    public var message: String { status.message }

    public init(_ code: RPCStatus.Code, _ message: String) { status = RPCStatus(code, message) }
    public init(status: RPCStatus) { self.status = status }

    public var description: String { status.description }
}
