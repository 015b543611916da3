// swift-tools-version:6.0
import PackageDescription

/// Strict Swift 6 settings shared by every Swift target.
let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "FedCoord",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "fedcoord", targets: ["fedcoord"]),
        .executable(name: "fedbench", targets: ["fedbench"]),
        .executable(name: "fedagent", targets: ["fedagent"]),
        .executable(name: "fedfuzz", targets: ["fedfuzz"]),
        .library(name: "FedWire", targets: ["FedWire"]),
        .library(name: "FedProtocol", targets: ["FedProtocol"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // System C libraries. The shim header wraps the macros Swift cannot import.
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CProtobufC", pkgConfig: "libprotobuf-c", providers: [.apt(["libprotobuf-c-dev"])]),
        // C kernels on the data path (CRC-32C, finiteness), vectorized when the CPU can.
        .target(name: "CKernels"),
        // protoc-c output for proto/fedcoord.proto, committed; `make proto` regenerates it.
        .target(name: "FedProtoC", dependencies: ["CProtobufC"]),
        // Tensors, aggregation, server optimizers, safetensors: pure Swift, no I/O.
        .target(name: "FedCore", swiftSettings: strictSettings),
        // Local learning: CSV data against the model schema, models, local optimizers, metrics,
        // federated standardization statistics, synthetic hospitals. No network.
        .target(name: "FedLearn", dependencies: ["FedCore"], swiftSettings: strictSettings),
        // Secure aggregation FLSECAGG-v1 (shared/design/secagg.md): OpenSSL primitives, Shamir,
        // quantization, the graph, and the agent's and coordinator's protocol state, without I/O.
        .target(name: "FedSecAgg", dependencies: ["CKernels", "COpenSSL", "FedCore"], swiftSettings: strictSettings),
        // Checksums and hashes (CRC-32C, SHA-256, model digests, finiteness and bounds), below the
        // transport and the protocol.
        .target(name: "FedHashing", dependencies: ["CKernels", "COpenSSL"], swiftSettings: strictSettings),
        // The transport: sockets, TLS 1.3, PKI files, framing, RPC calls generic over a WireCodec,
        // and the zero-copy landing of bulk data. Knows no application message.
        .target(
            name: "FedWire",
            dependencies: ["CKernels", "COpenSSL", "FedHashing", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictSettings
        ),
        // FedCoord's protocol over FedWire: messages and their protobuf-c codec, method names,
        // the Hello/Welcome join, tensor streams.
        .target(
            name: "FedProtocol",
            dependencies: [
                "CProtobufC", "FedProtoC", "FedHashing", "FedSecAgg", "FedWire", .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        // Round engine (pure state machine), round log, checkpoints, the coordinator's runtime.
        .target(
            name: "FedCoordinator",
            dependencies: [
                "FedCore", "FedHashing", "FedLearn", "FedProtocol", "FedSecAgg", "FedWire", .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        // The agent's runtime: dial, reconnect, train, announce, stream the update.
        .target(
            name: "FedAgent",
            dependencies: [
                "FedCore", "FedHashing", "FedLearn", "FedProtocol", "FedSecAgg", "FedWire", .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "fedagent",
            dependencies: [
                "FedAgent", "FedWire", "FedProtocol", "FedCore", "FedLearn",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "fedcoord",
            dependencies: [
                "FedWire", "FedProtocol", "FedCoordinator", "FedCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "fedbench",
            dependencies: [
                "FedWire", "FedProtocol", "FedHashing", "FedCoordinator", "FedLearn", "FedSecAgg",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        // Fuzz targets (`make fuzz` builds them with -sanitize=fuzzer; the plain build replays a corpus).
        .executableTarget(
            name: "fedfuzz",
            dependencies: ["FedWire", "FedProtocol", "FedHashing", "FedCore", "FedLearn", "FedCoordinator"],
            swiftSettings: strictSettings
        ),
        .testTarget(name: "FedSecAggTests", dependencies: ["FedSecAgg", "FedCore"], swiftSettings: strictSettings),
        .testTarget(name: "FedLearnTests", dependencies: ["FedLearn", "FedCore"], swiftSettings: strictSettings),
        .testTarget(name: "FedCoreTests", dependencies: ["FedCore"], swiftSettings: strictSettings),
        .testTarget(
            name: "FedCoordinatorTests", dependencies: ["FedCoordinator", "FedCore", "FedHashing", "FedProtocol"], swiftSettings: strictSettings),
        .testTarget(
            name: "EndToEndTests",
            dependencies: [
                "FedCoordinator", "FedAgent", "FedCore", "FedHashing", "FedLearn", "FedProtocol", "FedWire", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "FedWireTests",
            dependencies: ["FedWire", "FedProtocol", "FedHashing", "FedCore", "FedProtoC", "COpenSSL", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
