/// Big-endian fixed-width encoding for everything FLSECAGG-v1 hashes, derives or encrypts (§3.1).
struct ByteWriter {
    private(set) var bytes: [UInt8] = []

    init(_ bytes: [UInt8] = []) { self.bytes = bytes }

    mutating func u8(_ value: UInt8) { bytes.append(value) }
    mutating func u16(_ value: UInt16) { append(value) }
    mutating func u32(_ value: UInt32) { append(value) }
    mutating func u64(_ value: UInt64) { append(value) }
    mutating func i32(_ value: Int32) { append(UInt32(bitPattern: value)) }
    mutating func f64(_ value: Double) { append(value.bitPattern) }
    mutating func raw(_ data: [UInt8]) { bytes += data }

    private mutating func append<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.bigEndian) { bytes += $0 }
    }
}

extension Array where Element == UInt8 {
    /// Lower-case hex, for logs and tests (never for secrets).
    public var hex: String { map { String(format: "%02x", $0) }.joined() }

    /// Parses hex ("0a1b…"); nil if malformed.
    public init?(hex: String) {
        let characters = Array(hex.utf8)
        guard characters.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(characters.count / 2)
        for index in stride(from: 0, to: characters.count, by: 2) {
            guard let byte = UInt8(String(decoding: characters[index..<index + 2], as: UTF8.self), radix: 16) else { return nil }
            bytes.append(byte)
        }
        self = bytes
    }
}
