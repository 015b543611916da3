/// A configuration field that takes one of a closed set of names: its cases' raw values.
///
/// Decoding refuses any other name with an error naming the field (from the decoder's coding
/// path) and listing the names it accepts, so that each set is written once, in its enum.
public protocol ConfigurationChoice: RawRepresentable, CaseIterable, Codable, Sendable where RawValue == String {}

extension ConfigurationChoice {
    public init(from decoder: any Decoder) throws {
        let name = try decoder.singleValueContainer().decode(String.self)
        guard let value = Self(rawValue: name) else {
            let field = decoder.codingPath.map(\.stringValue).joined(separator: ".")
            throw StrictConfiguration.ConfigurationError("\(field) must be \(Self.choices), not \"\(name)\"")
        }
        self = value
    }

    /// The accepted names, quoted, in declaration order: `"a", "b" or "c"`.
    public static var choices: String {
        let names = allCases.map { "\"\($0.rawValue)\"" }
        guard names.count > 1 else { return names.joined() }
        return names.dropLast().joined(separator: ", ") + " or " + names.last!
    }
}
