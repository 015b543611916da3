import Foundation

/// The safetensors format (https://github.com/huggingface/safetensors): an 8-byte little-endian
/// header length, a JSON header naming each tensor's dtype, shape and byte range, then the raw
/// little-endian data. Readable from Python, numpy and PyTorch without this project.
///
/// Pure encoding and decoding; files are written by the caller (atomically).
public enum SafeTensors {
    /// Encodes a model (all tensors F32) with optional string metadata.
    public static func encode(_ model: ModelParameters, metadata: [String: String] = [:]) throws -> [UInt8] {
        var bytes = try header(for: model.layout, metadata: metadata)
        bytes.reserveCapacity(bytes.count + model.layout.byteCount)
        model.values.withUnsafeBytes { bytes.append(contentsOf: $0) }
        return bytes
    }

    /// The length prefix and JSON header of a file for `layout`; the tensors' bytes follow it.
    public static func header(for layout: ModelLayout, metadata: [String: String] = [:]) throws -> [UInt8] {
        var header: [String: Any] = [:]
        for (index, tensor) in layout.tensors.enumerated() {
            let range = layout.range(of: index)
            header[tensor.name] = ["dtype": "F32", "shape": tensor.shape, "data_offsets": [range.lowerBound * 4, range.upperBound * 4]]
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        // Pad the header with spaces so that the data starts 8-byte aligned.
        while json.count % 8 != 0 { json.append(0x20) }
        var bytes = [UInt8]()
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: json)
        return bytes
    }

    /// What a decoded file holds.
    public struct Decoded: Sendable {
        public var model: ModelParameters
        public var metadata: [String: String]
    }

    /// Decodes a file holding only F32 tensors, in data-offset order.
    ///
    /// - Throws: ``ModelError`` naming what is wrong (truncated, bad header, unsupported dtype,
    ///   overlapping or out-of-range offsets).
    public static func decode(_ bytes: [UInt8]) throws -> Decoded {
        guard bytes.count >= 8 else { throw ModelError("not a safetensors file: \(bytes.count) bytes") }
        let headerLength = bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard headerLength <= UInt64(bytes.count - 8), headerLength < 100 << 20 else {
            throw ModelError("safetensors header length \(headerLength) exceeds the file")
        }
        let jsonEnd = 8 + Int(headerLength)
        guard let header = try JSONSerialization.jsonObject(with: Data(bytes[8..<jsonEnd])) as? [String: Any] else {
            throw ModelError("safetensors header is not a JSON object")
        }
        var metadata: [String: String] = [:]
        var entries: [(name: String, shape: [Int], begin: Int, end: Int)] = []
        for (name, value) in header {
            if name == "__metadata__" {
                metadata = value as? [String: String] ?? [:]
                continue
            }
            guard let info = value as? [String: Any], let dtype = info["dtype"] as? String,
                let shape = info["shape"] as? [Int], let offsets = info["data_offsets"] as? [Int], offsets.count == 2
            else { throw ModelError("safetensors entry '\(name)' is malformed") }
            guard dtype == "F32" else { throw ModelError("tensor '\(name)' is \(dtype); only F32 is supported") }
            // The shape's byte count, refused rather than trapping when it overflows (a damaged file).
            let byteCount = shape.reduce(Optional(4)) { total, dimension in
                guard let total, dimension >= 0 else { return nil }
                let (product, overflow) = total.multipliedReportingOverflow(by: dimension)
                return overflow ? nil : product
            }
            guard let byteCount, offsets[0] >= 0, offsets[1] >= offsets[0], offsets[1] - offsets[0] == byteCount else {
                throw ModelError("tensor '\(name)': offsets \(offsets) do not match shape \(shape)")
            }
            entries.append((name, shape, offsets[0], offsets[1]))
        }
        entries.sort { $0.begin < $1.begin }
        var expected = 0
        for entry in entries {
            guard entry.begin == expected else { throw ModelError("tensor '\(entry.name)' does not follow the previous one") }
            expected = entry.end
        }
        guard jsonEnd + expected == bytes.count else {
            throw ModelError("safetensors data is \(bytes.count - jsonEnd) bytes; the header describes \(expected)")
        }
        let layout = try ModelLayout(entries.map { TensorSpec(name: $0.name, shape: $0.shape) })
        var values = [Float](repeating: 0, count: layout.parameterCount)
        values.withUnsafeMutableBytes { destination in
            bytes.withUnsafeBytes { source in
                destination.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[jsonEnd..<jsonEnd + expected]))
            }
        }
        return Decoded(model: try ModelParameters(layout: layout, values: values), metadata: metadata)
    }
}
