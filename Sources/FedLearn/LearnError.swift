/// An error of local learning: bad data, a schema mismatch, a model that does not fit.
/// `message` says what happened and what to do about it.
public struct LearnError: Error, CustomStringConvertible, Sendable, Equatable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        public static let invalidSchema = Code(name: "invalid_schema")
        /// The CSV does not match the schema: a column missing or duplicated, an empty file.
        public static let schemaMismatch = Code(name: "schema_mismatch")
        /// A value that cannot be used: non-numeric, missing, a label outside the classes.
        public static let invalidValue = Code(name: "invalid_value")
        public static let unreadable = Code(name: "unreadable")
        /// Parameters that do not fit the model: names, shapes, non-finite values.
        public static let invalidModel = Code(name: "invalid_model")
        public var description: String { name }
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
