import Foundation

/// Reads a CSV file with a header row (RFC 4180: commas, optional double quotes, `\n` or
/// `\r\n`), one record at a time, keeping the line number for errors.
///
/// Cost: the whole file is read into memory once (site files are small next to the model's
/// memory); fields are handed out as byte slices without copying.
struct CSVReader {
    let path: String
    private let bytes: [UInt8]
    private var position = 0
    /// The 1-based line number of the record last returned.
    private(set) var line = 0
    private var nextLine = 1

    init(path: String) throws {
        self.path = path
        guard let data = FileManager.default.contents(atPath: path) else {
            throw LearnError(.unreadable, "cannot read the data file '\(path)'; check the path and its permissions",
                             shareable: "the site's data file cannot be read")
        }
        bytes = [UInt8](data)
        // A UTF-8 byte-order mark, as spreadsheet programs write, is not part of the first column's name.
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { position = 3 }
    }

    /// The next record's fields, or nil at the end of the file. Blank lines are skipped.
    mutating func nextRecord() throws -> [String]? {
        while position < bytes.count {
            line = nextLine
            var fields: [String] = []
            var field: [UInt8] = []
            var quoted = false
            var sawAnything = false
            while position < bytes.count {
                let byte = bytes[position]
                position += 1
                if quoted {
                    if byte == UInt8(ascii: "\"") {
                        if position < bytes.count && bytes[position] == UInt8(ascii: "\"") {
                            field.append(byte)
                            position += 1
                        } else {
                            quoted = false
                        }
                    } else {
                        if byte == UInt8(ascii: "\n") { nextLine += 1 }
                        field.append(byte)
                    }
                    continue
                }
                switch byte {
                case UInt8(ascii: "\""):
                    quoted = true
                    sawAnything = true
                case UInt8(ascii: ","):
                    fields.append(String(decoding: field, as: UTF8.self))
                    field.removeAll(keepingCapacity: true)
                    sawAnything = true
                case UInt8(ascii: "\n"):
                    nextLine += 1
                    if sawAnything || !field.isEmpty {
                        fields.append(String(decoding: field, as: UTF8.self))
                        return fields
                    }
                    line = nextLine
                case UInt8(ascii: "\r"):
                    continue
                default:
                    field.append(byte)
                    sawAnything = true
                }
            }
            if quoted {
                throw LearnError(.invalidValue, "'\(path)' line \(line): a quoted field is never closed", shareable: "line \(line): a quoted field is never closed")
            }
            if sawAnything || !field.isEmpty {
                fields.append(String(decoding: field, as: UTF8.self))
                return fields
            }
        }
        return nil
    }
}
