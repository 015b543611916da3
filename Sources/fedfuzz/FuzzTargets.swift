import FedCoordinator
import FedCore
import FedHashing
import FedLearn
import FedProtocol
import FedWire
import Foundation

/// The fuzz targets: each takes arbitrary bytes, as a hostile peer or a damaged file would
/// supply them, and must return (accepting or refusing with an error), never crash, hang or
/// allocate without bound. Built with `-sanitize=fuzzer` by `make fuzz`; the plain build replays
/// a corpus through them (`fedfuzz TARGET FILE|DIR …`).
enum FuzzTarget: String, CaseIterable {
    case frame, envelope, tensor, safetensors, csv, config, roundlog

    /// The largest frame a fuzzed reader accepts (small, so that inputs can reach the limit).
    static let maxFrameBytes = 1 << 16

    func run(_ bytes: UnsafeRawBufferPointer) {
        switch self {
        case .frame: Self.frame(bytes)
        case .envelope: _ = try? Envelope(decoding: bytes)
        case .tensor: Self.tensor(bytes)
        case .safetensors: _ = try? SafeTensors.decode(Array(bytes))
        case .csv: Self.withFile(bytes) { _ = try? Dataset.load(csv: $0, schema: Self.schema) }
        case .config:
            Self.withFile(bytes) {
                _ = try? StrictConfiguration.load(CoordinatorConfiguration.self, from: $0)
            }
        case .roundlog: Self.withFile(bytes) { _ = try? RoundLog.scan(path: $0) { _ in } }
        }
    }

    /// Each frame's payload, one after the other, as the connection's reader takes them: a header
    /// checked against the limit before anything is allocated, then the payload; stops at the
    /// first bad header or a truncated frame, or when `body` returns false.
    static func forEachFrame(_ bytes: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> Bool) {
        var offset = 0
        while offset + FrameHeader.size <= bytes.count {
            guard let header = try? FrameHeader.parse(UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + FrameHeader.size]),
                                                      maxLength: maxFrameBytes) else { return }
            offset += FrameHeader.size
            let end = offset + Int(header.length)
            guard end <= bytes.count, body(UnsafeRawBufferPointer(rebasing: bytes[offset..<end])) else { return }
            offset = end
        }
    }

    static func frame(_ bytes: UnsafeRawBufferPointer) {
        forEachFrame(bytes) { payload in
            _ = try? Envelope(decoding: payload)
            return true
        }
    }

    /// The frames' envelopes as one call's tensor stream, received with the coordinator's checks.
    static func tensor(_ bytes: UnsafeRawBufferPointer) {
        var messages: [Message] = []
        forEachFrame(bytes) { payload in
            if let body = (try? Envelope(decoding: payload))?.body { messages.append(body) }
            return messages.count < 64
        }
        let source = ListSource(messages: messages)
        _ = try? TensorStream.receive(from: source, maxTotalBytes: 1 << 20, nonFinite: { _ in throw FuzzRefusal() }) { _, chunk in
            _ = FloatBounds.firstBeyond(chunk, bound: 1e4)
        }
    }

    static let schema = ModelSchema(kind: .logistic, features: ["age", "size"], label: "label", missing: ["size": .imputeMean])

    static func withFile(_ bytes: UnsafeRawBufferPointer, _ body: (String) -> Void) {
        let path = (FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm/" : NSTemporaryDirectory()) + "fedfuzz-\(getpid())"
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else { return }
        defer { unlink(path) }
        body(path)
    }
}

struct FuzzRefusal: Error {}

/// Messages handed out in order, as a call's inbox would.
final class ListSource: MessageSource {
    private var messages: [Message]
    init(messages: [Message]) { self.messages = messages.reversed() }
    func receive() throws -> Message? { messages.popLast() }
    func landChunks(into destination: UnsafeMutableRawBufferPointer) -> (RPCConnection, ChunkLanding)? { nil }
}

/// libFuzzer's callback; the target comes from `FEDFUZZ_TARGET`.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    chosenTarget.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

let chosenTarget: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment["FEDFUZZ_TARGET"] ?? ""
    guard let target = FuzzTarget(rawValue: name) else {
        FileHandle.standardError.write(Data("set FEDFUZZ_TARGET to one of \(FuzzTarget.allCases.map(\.rawValue))\n".utf8))
        exit(2)
    }
    return target
}()
