/// One object of a configuration file, its fields each written once: the property, with its
/// default, and one ``fields`` entry naming it in the file. Decoding starts from `init()` (the
/// defaults, and a placeholder for each required field) and takes only what the file holds; the
/// keys a file may hold (``schema``, for ``StrictConfiguration``) follow from the same entries.
public protocol ConfigurationSection: Decodable {
    /// Every field at its default; a required field holds a placeholder that decoding replaces.
    init()
    /// The section's fields, in the order the file documents them.
    static var fields: [ConfigurationField<Self>] { get }
}

extension ConfigurationSection {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: ConfigurationKey.self)
        var section = Self()
        for field in Self.fields { try field.decode(container, &section) }
        self = section
    }

    /// The keys a file may hold here, nested sections with their own.
    public static var schema: StrictConfiguration.Schema {
        .object(Dictionary(uniqueKeysWithValues: fields.map { ($0.key, $0.schema) }))
    }
}

/// One field of a ``ConfigurationSection``: its name in the file, whether the file must hold it,
/// and where it goes. A field whose value is itself a section carries that section's schema.
public struct ConfigurationField<Section> {
    public let key: String
    let schema: StrictConfiguration.Schema
    let decode: (KeyedDecodingContainer<ConfigurationKey>, inout Section) throws -> Void

    private static func make<Value: Decodable>(
        _ key: String, _ path: WritableKeyPath<Section, Value>, required: Bool, schema: StrictConfiguration.Schema
    ) -> Self {
        Self(key: key, schema: schema) { container, section in
            let codingKey = ConfigurationKey(key)
            if let value = try container.decodeIfPresent(Value.self, forKey: codingKey) {
                section[keyPath: path] = value
            } else if required {
                throw DecodingError.keyNotFound(codingKey, .init(codingPath: container.codingPath, debugDescription: "required"))
            }
        }
    }

    /// A field the file may leave out; its default is the section's `init()`'s.
    public static func field<Value: Decodable>(_ key: String, _ path: WritableKeyPath<Section, Value>) -> Self {
        make(key, path, required: false, schema: .any)
    }

    /// A nested section the file may leave out, or hold in part.
    public static func field<Value: ConfigurationSection>(_ key: String, _ path: WritableKeyPath<Section, Value>) -> Self {
        make(key, path, required: false, schema: Value.schema)
    }

    /// A nested section that is absent unless the file holds it.
    public static func field<Value: ConfigurationSection>(_ key: String, _ path: WritableKeyPath<Section, Value?>) -> Self {
        make(key, path, required: false, schema: Value.schema)
    }

    /// A field the file must hold.
    public static func required<Value: Decodable>(_ key: String, _ path: WritableKeyPath<Section, Value>) -> Self {
        make(key, path, required: true, schema: .any)
    }

    /// A nested section the file must hold (its own fields may still have defaults).
    public static func required<Value: ConfigurationSection>(_ key: String, _ path: WritableKeyPath<Section, Value>) -> Self {
        make(key, path, required: true, schema: Value.schema)
    }
}

/// A configuration file's key, as written.
public struct ConfigurationKey: CodingKey, Sendable {
    public let stringValue: String
    public init(_ name: String) { stringValue = name }
    public init?(stringValue: String) { self.stringValue = stringValue }
    public var intValue: Int? { nil }
    public init?(intValue: Int) { nil }
}
