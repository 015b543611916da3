/// An error of local learning: bad data, a schema mismatch, a model that does not fit.
/// `message` says what happened and what to do about it, for the site's own log and screen: it
/// may name the local file and quote a cell. ``shareable`` is what may leave the site.
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
    /// The problem in structural terms only — its kind, line and field numbers, the schema's own
    /// column names — never a cell's content or a local path: what a site may tell the
    /// coordinator. Without one given, the code and a pointer to the site's log.
    public let shareable: String

    public init(_ code: Code, _ message: String, shareable: String? = nil) {
        self.code = code
        self.message = message
        self.shareable = shareable ?? "\(code.name): the site's data could not be used; the site's own log says why"
    }

    public var description: String { message }
}
