import Foundation

/// Decoding of JSON configuration files that refuses unknown fields (a typo must not silently
/// become a default) and names the file and field in every error.
public enum StrictConfiguration {
    /// The keys a configuration object may hold; nested objects have their own key sets.
    public indirect enum Schema: Sendable {
        case object([String: Schema])
        case any
    }

    /// An error in a configuration file, saying what to fix.
    public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
        public var message: String
        public init(_ message: String) { self.message = message }
        public var description: String { message }
    }

    /// Parses `--set key.path=value` items into overrides for ``load(_:from:schema:overrides:)``.
    /// - Throws: ``ConfigurationError`` for an item without `=`, showing `example`.
    public static func overrides(_ items: [String], example: String) throws -> [String: String] {
        var settings: [String: String] = [:]
        for item in items {
            guard let equals = item.firstIndex(of: "=") else {
                throw ConfigurationError("--set takes key.path=value, for example --set \(example); got '\(item)'")
            }
            settings[String(item[..<equals])] = String(item[item.index(after: equals)...])
        }
        return settings
    }

    /// Reads `path`, checks every key against `T`'s schema, then decodes `T`.
    public static func load<T: ConfigurationSection>(_ type: T.Type, from path: String, overrides: [String: String] = [:]) throws -> T {
        let schema = T.schema
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError("cannot read the configuration file '\(path)'; check the path given to --config")
        }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data)
        } catch {
            throw ConfigurationError("'\(path)' is not valid JSON\(syntaxLocation(of: error, in: data)); fix the syntax there "
                + "(a missing comma, quote or brace, a trailing comma, a comment)")
        }
        var root = object
        for (path, value) in overrides.sorted(by: { $0.key < $1.key }) { root = try set(path, to: value, in: root) }
        try check(root, against: schema, at: "", file: path)
        do {
            return try JSONDecoder().decode(T.self, from: JSONSerialization.data(withJSONObject: root))
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            throw ConfigurationError("'\(path)': field '\(context.codingPath.map(\.stringValue).joined(separator: "."))' has the wrong type: \(context.debugDescription)")
        } catch let DecodingError.keyNotFound(key, context) {
            let parent = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw ConfigurationError("'\(path)': required field '\(parent.isEmpty ? key.stringValue : parent + "." + key.stringValue)' is missing")
        } catch let error as ConfigurationError {
            throw error
        } catch {
            throw ConfigurationError("'\(path)': \(error)")
        }
    }

    /// " at line L, column C (`the line`)" from the parser's character offset, or "" when it
    /// gives none. The configuration is the operator's own file, so its line may be shown.
    static func syntaxLocation(of error: any Error, in data: Data) -> String {
        guard let detail = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String,
              let range = detail.range(of: #"character \d+"#, options: .regularExpression),
              let offset = Int(detail[range].dropFirst("character ".count)), offset <= data.count
        else { return "" }
        let bytes = [UInt8](data)
        let lineStart = bytes[..<offset].lastIndex(of: 0x0A).map { $0 + 1 } ?? 0
        let lineEnd = bytes[offset...].firstIndex(of: 0x0A) ?? bytes.count
        let line = bytes[..<offset].filter { $0 == 0x0A }.count + 1
        let text = String(decoding: bytes[lineStart..<lineEnd], as: UTF8.self).trimmingCharacters(in: .whitespaces)
        return " at line \(line), column \(offset - lineStart + 1) (`\(text.prefix(80))`)"
    }

    private static func check(_ value: Any, against schema: Schema, at path: String, file: String) throws {
        guard case .object(let fields) = schema else { return }
        guard let object = value as? [String: Any] else {
            throw ConfigurationError("'\(file)': '\(path.isEmpty ? "the top level" : path)' must be a JSON object")
        }
        for (key, child) in object {
            let childPath = path.isEmpty ? key : path + "." + key
            guard let childSchema = fields[key] else {
                throw ConfigurationError("'\(file)': unknown field '\(childPath)'; known fields here: \(fields.keys.sorted().joined(separator: ", "))")
            }
            try check(child, against: childSchema, at: childPath, file: file)
        }
    }

    /// Applies `a.b.c=value` (value parsed as JSON, or taken as a string).
    static func set(_ path: String, to text: String, in root: Any) throws -> Any {
        let keys = path.split(separator: ".").map(String.init)
        guard !keys.isEmpty else { throw ConfigurationError("--set needs key=value, got '\(path)'") }
        let value: Any = (try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])) ?? text
        func assign(_ node: Any, _ index: Int) -> Any {
            var object = node as? [String: Any] ?? [:]
            if index == keys.count - 1 {
                object[keys[index]] = value
            } else {
                object[keys[index]] = assign(object[keys[index]] ?? [String: Any](), index + 1)
            }
            return object
        }
        return assign(root, 0)
    }
}
