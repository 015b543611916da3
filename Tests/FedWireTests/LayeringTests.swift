import Foundation
import Testing

/// FedWire is the transport only: sockets, TLS, frames, calls. The messages live above it
/// (FedProtocol), secure aggregation further up; FedWire must not reach for either.
@Suite("Layering")
struct LayeringTests {
    static let forbidden = ["FedSecAgg", "FedProtocol", "FedProtoC", "CProtobufC", "FedCoordinator", "FedAgent"]

    @Test("FedWire's sources import no application module")
    func fedWireImportsNoApplication() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Sources/FedWire")
        let files = try #require(FileManager.default.enumerator(atPath: root.path)).compactMap { $0 as? String }
            .filter { $0.hasSuffix(".swift") }
        #expect(files.count > 10, "found \(files.count) Swift files under \(root.path)")
        for file in files {
            let text = try String(contentsOf: root.appendingPathComponent(file), encoding: .utf8)
            for line in text.split(separator: "\n") where line.contains("import ") {
                let module = line.split(separator: " ").last.map(String.init) ?? ""
                #expect(!Self.forbidden.contains(module), "\(file): \(line)")
            }
        }
    }
}
