import FedHashing
import FedProtocol
import FedWire
import Foundation
import Logging

/// The wire benchmarks. Each figure is the median of several runs, printed beside the
/// machine's own limit measured in the same run, with the ratio.
final class WireBenchmark: @unchecked Sendable {
    let bytes: Int
    let runs: Int
    let directory: String
    let files: DevelopmentFederation.Files
    let serverContext: TLSContext
    let clientContext: TLSContext
    let writeSize = 4 << 20
    let quiet = Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() }

    init(bytes: Int, runs: Int) throws {
        self.bytes = bytes
        self.runs = max(1, runs)
        directory = NSTemporaryDirectory() + "fedbench-\(getpid())"
        files = try DevelopmentFederation.create(in: directory, agents: ["hospital-a"])
        serverContext = try TLSContext(configuration: .makeServerConfiguration(
            certificateChainPath: files.coordinatorCertificate, privateKeyPath: files.coordinatorKey,
            trustRootPath: files.caCertificate, revocationListPath: files.revocationList))
        clientContext = try TLSContext(configuration: .makeClientConfiguration(
            certificateChainPath: files.agentCertificate("hospital-a"), privateKeyPath: files.agentKey("hospital-a"),
            trustRootPath: files.caCertificate))
    }

    func cleanUp() { try? FileManager.default.removeItem(atPath: directory) }

    func runAll() throws {
        print("FedCoord wire benchmark (release build), \(ProcessInfo.processInfo.activeProcessorCount) cores, "
            + "\(bytes >> 20) MiB per throughput run, median of \(runs) runs")
        print("")
        let aes = openSSLSpeed("aes-256-gcm")
        let crc = crc32cThroughput()
        let tls = median((0..<runs).map { _ in (try? tlsThroughput()) ?? 0 })
        let tcp = median((0..<runs).map { _ in (try? tcpThroughput()) ?? 0 })
        let stream = median((0..<runs).map { _ in (try? tensorStreamThroughput()) ?? 0 })
        print("Throughput on loopback, \(writeSize >> 20) MiB writes:")
        row("plain TCP", tcp, unit: "GB/s")
        row("TLS 1.3 (AES-256-GCM), mTLS", tls, unit: "GB/s")
        row("tensor stream over mTLS (framed chunks, CRC-32C)", stream, unit: "GB/s")
        row("openssl speed -evp aes-256-gcm, 1 core, 16 KiB", aes, unit: "GB/s")
        row("CRC-32C (the stream's check), 1 core, 1 MiB pieces", crc, unit: "GB/s")
        print(String(format: "  ratio TLS / TCP                         %6.2f   (target >= 0.35)", tls / max(tcp, 1e-9)))
        print(String(format: "  ratio TLS / AES-256-GCM one core        %6.2f", tls / max(aes, 1e-9)))
        print(String(format: "  ratio tensor stream / raw TLS           %6.2f", stream / max(tls, 1e-9)))
        // A tensor stream costs, per byte, a CRC-32C and AES-GCM on each side plus the copies, on 2 cores.
        let ceiling = 2 / (2 / crc + 2 / aes)
        print(String(format: "  ceiling on 2 cores (2×CRC + 2×AES work) %6.2f GB/s; stream reaches %.2f of it", ceiling, stream / max(ceiling, 1e-9)))
        print("")
        let handshakes = try handshakeRate(seconds: 3)
        print("Handshakes:")
        row("full mTLS handshake + Join round trip (2 client threads)", handshakes, unit: "/s")
        print("")
        let (codec, copy) = chunkCodec()
        print("Chunk codec, 10M floats (40 MB) as 4 MiB TensorChunk frames:")
        row("encode + decode (protobuf-c)", codec, unit: "GB/s")
        row("memcpy of the same 40 MB", copy, unit: "GB/s")
        print(String(format: "  ratio codec / memcpy                    %6.2f   (target >= 0.5)", codec / max(copy, 1e-9)))
    }

    private func row(_ label: String, _ value: Double, unit: String) {
        let padded = label.padding(toLength: 56, withPad: " ", startingAt: 0)
        print(String(format: "  %@ %8.2f %@", padded, value, unit))
    }

    private func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
    }

    // MARK: Throughput

    /// Accepts one connection on a fresh listener and runs `serve` on a thread; returns the port
    /// and a semaphore signalled when `serve` is done.
    private func serveOnce(_ serve: @escaping @Sendable (Socket) -> Void) throws -> (UInt16, DispatchSemaphore) {
        let listener = try Socket.listen(host: "127.0.0.1", port: 0)
        let done = DispatchSemaphore(value: 0)
        let port = listener.localAddress?.port ?? 0
        let thread = Thread {
            defer { done.signal() }
            while true {
                guard (try? listener.wait(for: .readable, until: .after(seconds: 30))) != nil else { return }
                if let (socket, _) = (try? listener.accept()) ?? nil {
                    serve(socket)
                    listener.close()
                    return
                }
            }
        }
        thread.start()
        return (port, done)
    }

    /// Raw TLS: 1 GiB from client to server in 4 MiB SSL writes; GB/s as the receiver saw it.
    func tlsThroughput() throws -> Double {
        let total = bytes
        let context = serverContext
        let elapsed = ManagedAtomicDouble()
        let (port, done) = try serveOnce { socket in
            guard let tls = try? TLSConnection(socket: socket, context: context, remoteAddress: nil),
                (try? tls.handshake(deadline: .after(seconds: 10))) != nil
            else { return }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 64)
            defer { buffer.deallocate() }
            var received = 0
            var start: Deadline?
            while received < total {
                guard let n = try? tls.read(into: buffer, deadline: .after(seconds: 30)), n > 0 else { break }
                if start == nil { start = .now }
                received += n
            }
            if received == total, let start { elapsed.value = -start.remainingSeconds }
            tls.close()
        }
        let socket = try Socket.connect(host: "127.0.0.1", port: port, deadline: .after(seconds: 10))
        let tls = try TLSConnection(socket: socket, context: clientContext, remoteAddress: nil, expectedServerName: "127.0.0.1")
        try tls.handshake(deadline: .after(seconds: 10))
        let payload = UnsafeMutableRawBufferPointer.allocate(byteCount: writeSize, alignment: 64)
        payload.initializeMemory(as: UInt8.self, repeating: 0x5A)
        defer { payload.deallocate() }
        var sent = 0
        while sent < total {
            let n = min(writeSize, total - sent)
            try tls.write(UnsafeRawBufferPointer(rebasing: payload[..<n]), stallSeconds: 30)
            sent += n
        }
        done.wait()
        tls.close()
        return elapsed.value > 0 ? Double(total) / elapsed.value / 1e9 : 0
    }

    /// Plain TCP on the same loopback, same write size.
    func tcpThroughput() throws -> Double {
        let total = bytes
        let elapsed = ManagedAtomicDouble()
        let (port, done) = try serveOnce { socket in
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 64)
            defer { buffer.deallocate() }
            var received = 0
            var start: Deadline?
            while received < total {
                let n = read(socket.descriptor, buffer.baseAddress, buffer.count)
                if n > 0 {
                    if start == nil { start = .now }
                    received += n
                } else if n < 0 && (errno == EAGAIN || errno == EINTR) {
                    guard (try? socket.wait(for: .readable, until: .after(seconds: 30))) != nil else { break }
                } else {
                    break
                }
            }
            if received == total, let start { elapsed.value = -start.remainingSeconds }
            socket.close()
        }
        let socket = try Socket.connect(host: "127.0.0.1", port: port, deadline: .after(seconds: 10))
        let payload = UnsafeMutableRawBufferPointer.allocate(byteCount: writeSize, alignment: 64)
        payload.initializeMemory(as: UInt8.self, repeating: 0x5A)
        defer { payload.deallocate() }
        var sent = 0
        while sent < total {
            let chunk = min(writeSize, total - sent)
            var offset = 0
            while offset < chunk {
                let n = write(socket.descriptor, payload.baseAddress! + offset, chunk - offset)
                if n > 0 {
                    offset += n
                } else if n < 0 && (errno == EAGAIN || errno == EINTR) {
                    try socket.wait(for: .writable, until: .after(seconds: 30))
                } else {
                    throw WireError(.connectionBroken, "TCP write failed")
                }
            }
            sent += chunk
        }
        done.wait()
        socket.close()
        return elapsed.value > 0 ? Double(total) / elapsed.value / 1e9 : 0
    }

    /// CRC-32C over 64 MiB in 1 MiB pieces (as a tensor stream's chunks), GB/s, median of 5.
    func crc32cThroughput() -> Double {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 20, alignment: 64)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0xA5)
        let rates = (0..<5).map { _ -> Double in
            let started = Deadline.now
            var crc = CRC32C()
            for offset in stride(from: 0, to: buffer.count, by: 1 << 20) {
                crc.update(UnsafeRawBufferPointer(rebasing: buffer[offset..<offset + (1 << 20)]))
            }
            return Double(buffer.count) / 1e9 / max(-started.remainingSeconds, 1e-9)
        }
        return median(rates)
    }

    /// The real path: the coordinator streams one tensor of `bytes` to an agent as framed
    /// TensorChunks over an RPC call, with a CRC-32C on both sides.
    func tensorStreamThroughput() throws -> Double {
        let delegate = BenchDelegate()
        var configuration = WireServer.Configuration(tls: serverContext.configuration)
        configuration.connection.heartbeatInterval = nil
        configuration.connection.livenessTimeout = nil
        let server = try WireServer(configuration: configuration, delegate: delegate, logger: quiet)
        server.start()
        defer { server.stop() }
        let floats = bytes / 4
        let elapsed = ManagedAtomicDouble()
        let (agent, _) = try WireClient.connect(
            host: "127.0.0.1", port: server.port, context: clientContext, hello: Hello(), options: ConnectionOptions(), logger: quiet
        ) { call in
            var start: Deadline?
            _ = try TensorStream.receive(from: call, maxTotalBytes: UInt64(floats) * 4) { _, _ in
                if start == nil { start = .now }
            }
            if let start { elapsed.value = -start.remainingSeconds }
        }
        defer { agent.close() }
        let deadline = Deadline.after(seconds: 10)
        while delegate.connections.isEmpty && !deadline.hasPassed { usleep(1000) }
        guard let coordinatorSide = delegate.connections.first else { return 0 }
        let weights = UnsafeMutableBufferPointer<Float>.allocate(capacity: floats)
        weights.initialize(repeating: 0.5)
        defer { weights.deallocate() }
        let call = try coordinatorSide.makeCall(method: Methods.train, timeout: 600)
        _ = try TensorStream.send(name: "w", shape: [floats], floats: UnsafeBufferPointer(weights), to: call)
        try call.finishSending()
        try call.expectEnd()
        return elapsed.value > 0 ? Double(floats * 4) / elapsed.value / 1e9 : 0
    }

    // MARK: Handshakes

    /// Full handshakes (TCP connect, TLS 1.3 mTLS, Join) per second from two client threads.
    func handshakeRate(seconds: Double) throws -> Double {
        let delegate = BenchDelegate(keepConnections: false)
        var configuration = WireServer.Configuration(tls: serverContext.configuration)
        configuration.connection.heartbeatInterval = nil
        let server = try WireServer(configuration: configuration, delegate: delegate, logger: quiet)
        server.start()
        defer { server.stop() }
        let port = server.port
        let count = ManagedAtomicDouble()
        let group = DispatchGroup()
        let until = Deadline.after(seconds: seconds)
        let start = Deadline.now
        for _ in 0..<2 {
            group.enter()
            Thread { [self] in
                defer { group.leave() }
                while !until.hasPassed {
                    guard let (connection, _) = try? WireClient.connect(
                        host: "127.0.0.1", port: port, context: clientContext, hello: Hello(), options: ConnectionOptions(),
                        logger: quiet, handler: { _ in })
                    else { continue }
                    connection.close()
                    count.add(1)
                }
            }.start()
        }
        group.wait()
        return count.value / -start.remainingSeconds
    }

    // MARK: Codec

    /// Encode + decode of 10M floats as 4 MiB TensorChunk frames, against memcpy of 40 MB.
    func chunkCodec() -> (codec: Double, memcpy: Double) {
        let floats = 10_000_000
        let total = floats * 4
        let source = UnsafeMutableRawBufferPointer.allocate(byteCount: total, alignment: 64)
        let destination = UnsafeMutableRawBufferPointer.allocate(byteCount: total, alignment: 64)
        source.initializeMemory(as: UInt8.self, repeating: 1)
        destination.initializeMemory(as: UInt8.self, repeating: 0)
        defer {
            source.deallocate()
            destination.deallocate()
        }
        var codecTimes: [Double] = []
        var copyTimes: [Double] = []
        var frame: [UInt8] = []
        for _ in 0..<7 {
            let copyStart = Deadline.now
            destination.copyMemory(from: UnsafeRawBufferPointer(source))
            copyTimes.append(-copyStart.remainingSeconds)
            let start = Deadline.now
            var offset = 0
            var decodedBytes = 0
            while offset < total {
                let length = min(TensorStream.maxChunkBytes, total - offset)
                let view = ByteView(borrowing: UnsafeRawBufferPointer(rebasing: source[offset..<offset + length]))
                let envelope = Envelope(callID: 2, body: .tensorChunk(TensorChunk(offset: UInt64(offset), data: view)))
                let frameLength = (try? envelope.encodeFrame(into: &frame, maxFrameBytes: 8 << 20)) ?? 0
                let decoded = frame.withUnsafeBytes {
                    try? Envelope(decoding: UnsafeRawBufferPointer(rebasing: $0[FrameHeader.size..<frameLength]))
                }
                if case .tensorChunk(let chunk)? = decoded?.body { decodedBytes += chunk.data.count }
                offset += length
            }
            codecTimes.append(-start.remainingSeconds)
            precondition(decodedBytes == total, "codec lost bytes")
        }
        return (Double(total) / median(codecTimes) / 1e9, Double(total) / median(copyTimes) / 1e9)
    }

    // MARK: openssl speed

    /// `openssl speed -evp CIPHER` on one core with 16 KiB blocks, in GB/s.
    func openSSLSpeed(_ cipher: String) -> Double { Self.openSSLSpeedOnce(cipher) }

    static func openSSLSpeedOnce(_ cipher: String) -> Double {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = ["speed", "-mr", "-seconds", "2", "-bytes", "16384", "-evp", cipher]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = Pipe()
        guard (try? process.run()) != nil else { return 0 }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        // Machine-readable line: +F:<n>:<cipher>:<bytes per second for each block size>
        let text = String(decoding: data, as: UTF8.self)
        for line in text.split(separator: "\n") where line.hasPrefix("+F:") {
            if let last = line.split(separator: ":").last, let value = Double(last) { return value / 1e9 }
        }
        return 0
    }
}

/// Keeps the connections that join, so that the benchmark can call the agent.
final class BenchDelegate: WireServerDelegate, @unchecked Sendable {
    private let lock = NSLock()
    private var joined: [RPCConnection] = []
    private let keepConnections: Bool
    init(keepConnections: Bool = true) { self.keepConnections = keepConnections }
    var connections: [RPCConnection] { lock.withLock { joined } }
    func welcome(_ hello: Hello, from peer: PeerIdentity, on connection: RPCConnection) throws -> Welcome {
        if keepConnections { lock.withLock { joined.append(connection) } }
        return Welcome()
    }
    func handle(_ call: ServerCall) throws { throw RPCError(.unimplemented, call.method) }
    func connectionClosed(_ connection: RPCConnection, error: WireError?) {}
    func connectionRefused(_ refusal: ConnectionRefusal) {}
}

/// A Double shared between threads.
final class ManagedAtomicDouble: @unchecked Sendable {
    private let lock = NSLock()
    private var stored = 0.0
    var value: Double {
        get { lock.withLock { stored } }
        set { lock.withLock { stored = newValue } }
    }
    func add(_ delta: Double) { lock.withLock { stored += delta } }
}
