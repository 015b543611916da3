import FedAgent
import FedCore
import FedProtocol
import FedWire
import Foundation
import Logging

/// An agent that speaks the protocol directly, to play hostile, late or broken agents that the
/// real ``Agent`` would never be.
final class ScriptedAgent: @unchecked Sendable {
    /// What to do when the coordinator pulls the update.
    enum Upload: Sendable {
        /// A correct update with this delta value everywhere.
        case honest(Float)
        /// Tensors named or shaped differently from the model.
        case wrongShape
        /// A NaN in the first tensor.
        case notFinite
        /// A header announcing more bytes than are sent, then the stream ends.
        case lyingSize
        /// Half the first tensor, then the connection drops.
        case breakMidway
    }

    let name: String
    let connection: RPCConnection
    private let lock = NSLock()
    private var tasks: [TrainTask] = []
    private var layouts: [UInt64: [TensorSpec]] = [:]
    var upload: Upload
    /// Seconds to wait before streaming the update when pulled.
    var uploadDelay = 0.0
    /// The example count the update's header claims when pulled.
    var headerExamples: UInt64 = 10
    /// When set, a Train call blocks here without reading its model (a site that stops reading
    /// while its heartbeats go on) until the semaphore is signalled.
    var stallTrain: DispatchSemaphore?

    init(_ federation: Federation, name: String, port: UInt16, upload: Upload) throws {
        self.name = name
        self.upload = upload
        let context = try TLSContext(configuration: .makeClientConfiguration(
            certificateChainPath: federation.files.agentCertificate(name), privateKeyPath: federation.files.agentKey(name),
            trustRootPath: federation.files.caCertificate))
        var options = ConnectionOptions()
        options.heartbeatInterval = 0.5
        let box = WeakBox()
        (connection, _) = try WireClient.connect(
            host: "127.0.0.1", port: port, context: context, hello: Hello(agentName: "scripted"), options: options,
            logger: Federation.quiet
        ) { call in try box.agent?.handle(call) }
        box.agent = self
    }

    deinit { connection.close() }

    final class WeakBox: @unchecked Sendable {
        weak var agent: ScriptedAgent?
    }

    var receivedTasks: [TrainTask] { lock.withLock { tasks } }

    /// Waits for a task and returns it.
    func waitForTask(after count: Int = 0, seconds: Double = 20) -> TrainTask? {
        guard eventually(seconds, { receivedTasks.count > count }) else { return nil }
        return receivedTasks[count]
    }

    /// Announces an update for `round`; returns the coordinator's verdict.
    func announce(round: UInt64, version: UInt64, examples: UInt64 = 10, change: (inout UpdateReady) -> Void = { _ in }) -> RPCStatus {
        var ready = UpdateReady()
        ready.roundID = round
        ready.modelVersion = version
        ready.exampleCount = examples
        change(&ready)
        do {
            _ = try connection.unary(Methods.announceUpdate, .updateReady(ready), timeout: 60)
            return .ok
        } catch let error as RPCError {
            return error.status
        } catch {
            return RPCStatus(.unknown, "\(error)")
        }
    }

    private func handle(_ call: ServerCall) throws {
        switch call.method {
        case Methods.train:
            if let stallTrain { stallTrain.wait() }
            guard case .trainTask(let task) = try call.receiveOnly() else { throw RPCError(.invalidArgument, "task") }
            var specs: [TensorSpec] = []
            for _ in 0..<task.tensorCount {
                let header = try TensorStream.readHeader(from: call)
                _ = try TensorStream.receive(from: call, header: header) { _, _ in }
                specs.append(TensorSpec(name: header.name, shape: header.shape.map { Int($0) }))
            }
            _ = try call.receive()
            lock.withLock {
                tasks.append(task)
                layouts[task.roundID] = specs
            }
        case Methods.pullUpdate:
            guard case .fetchUpdate(let fetch) = try call.receiveOnly() else { throw RPCError(.invalidArgument, "fetch") }
            let specs = lock.withLock { layouts[fetch.roundID] } ?? []
            var header = UpdateReady()
            header.roundID = fetch.roundID
            header.modelVersion = fetch.modelVersion
            header.exampleCount = headerExamples
            if uploadDelay > 0 { usleep(UInt32(uploadDelay * 1e6)) }
            try call.send(.updateReady(header))
            try stream(specs, to: call)
        case Methods.cancel:
            _ = try call.receiveOnly()
            try call.send(.empty)
        default:
            throw RPCError(.unimplemented, call.method)
        }
    }

    private func stream(_ specs: [TensorSpec], to call: ServerCall) throws {
        switch upload {
        case .honest(let value):
            for spec in specs {
                let values = [Float](repeating: value, count: spec.count)
                _ = try values.withUnsafeBufferPointer { try TensorStream.send(name: spec.name, shape: spec.shape, floats: $0, to: call) }
            }
        case .wrongShape:
            for spec in specs {
                let values = [Float](repeating: 0.1, count: spec.count + 1)
                _ = try values.withUnsafeBufferPointer {
                    try TensorStream.send(name: spec.name, shape: [spec.count + 1], floats: $0, to: call)
                }
            }
        case .notFinite:
            for (index, spec) in specs.enumerated() {
                var values = [Float](repeating: 0.1, count: spec.count)
                if index == 0 { values[values.count / 2] = .nan }
                _ = try values.withUnsafeBufferPointer { try TensorStream.send(name: spec.name, shape: spec.shape, floats: $0, to: call) }
            }
        case .lyingSize:
            let spec = specs[0]
            try call.send(.tensorHeader(TensorHeader(name: spec.name, shape: spec.shape.map { UInt64($0) },
                                                     totalBytes: UInt64(spec.count * 4), chunkBytes: 1024)))
            try call.send(.tensorChunk(TensorChunk(offset: 0, data: ByteView([UInt8](repeating: 0, count: 1024)))))
            try call.send(.tensorChunk(TensorChunk(offset: 1024, data: ByteView([UInt8](repeating: 0, count: spec.count * 4)))))
        case .breakMidway:
            let spec = specs[0]
            try call.send(.tensorHeader(TensorHeader(name: spec.name, shape: spec.shape.map { UInt64($0) },
                                                     totalBytes: UInt64(spec.count * 4), chunkBytes: 1024)))
            try call.send(.tensorChunk(TensorChunk(offset: 0, data: ByteView([UInt8](repeating: 0, count: 1024)))))
            usleep(50_000)
            connection.close()
            throw RPCError(.aborted, "dropped mid-upload on purpose")
        }
    }
}
