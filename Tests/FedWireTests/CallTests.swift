import FedProtocol
import Foundation
import Logging
import Synchronization
import Testing
@testable import FedWire

/// gRPC-style calls over one multiplexed mTLS connection, in both directions.
@Suite("Calls")
struct CallTests {
    /// A coordinator-side handler with a few methods to exercise each call shape.
    static let handler: @Sendable (ServerCall) throws -> Void = { call in
        switch call.method {
        case Methods.announceUpdate:
            // Unary: answer with what was asked, or a status.
            guard case .updateReady(let ready) = try call.receiveOnly() else { throw RPCError(.invalidArgument, "UpdateReady expected") }
            if ready.exampleCount == 0 {
                throw RPCError(.invalidArgument, "example_count must be positive; the agent reported 0 training examples")
            }
            if call.metadata["x-slow"] != nil { usleep(2_000_000) }
            try call.send(.empty)
        case Methods.evaluate:
            // Client-streaming: count messages until end of stream.
            var count: UInt64 = 0
            while try call.receive() != nil { count += 1 }
            var result = EvaluationResult()
            result.exampleCount = count
            try call.send(.evaluationResult(result))
        case Methods.pullUpdate:
            // Server-streaming: n heartbeats then OK.
            guard case .fetchUpdate(let fetch) = try call.receiveOnly() else { throw RPCError(.invalidArgument, "FetchUpdate expected") }
            for index in 0..<fetch.roundID { try call.send(.heartbeat(Heartbeat(sequence: index))) }
        default:
            throw RPCError(.unimplemented, "\(call.method) is not served here")
        }
    }

    @Test("Unary call: response, and a non-OK status with its message")
    func unary() throws {
        let server = try TestServer(delegate: TestServerDelegate(onCall: Self.handler))
        let (connection, _) = try server.connect()
        defer { connection.close() }
        var ready = UpdateReady()
        ready.exampleCount = 10
        guard case .empty = try connection.unary(Methods.announceUpdate, .updateReady(ready), timeout: 5) else {
            Issue.record("expected Empty")
            return
        }
        ready.exampleCount = 0
        let error = #expect(throws: RPCError.self) { try connection.unary(Methods.announceUpdate, .updateReady(ready), timeout: 5) }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.contains("example_count must be positive") == true)
        let unknown = #expect(throws: RPCError.self) { try connection.unary("/fedcoord.v1.Coordinator/Nope", .empty, timeout: 5) }
        #expect(unknown?.code == .unimplemented)
    }

    @Test("Client-streaming and server-streaming calls")
    func streams() throws {
        let server = try TestServer(delegate: TestServerDelegate(onCall: Self.handler))
        let (connection, _) = try server.connect()
        defer { connection.close() }
        let upload = try connection.makeCall(method: Methods.evaluate, timeout: 5)
        for index in 0..<50 { try upload.send(.heartbeat(Heartbeat(sequence: UInt64(index)))) }
        try upload.finishSending()
        guard case .evaluationResult(let result) = try upload.receive() else {
            Issue.record("expected EvaluationResult")
            return
        }
        #expect(result.exampleCount == 50)
        try upload.expectEnd()

        let download = try connection.makeCall(method: Methods.pullUpdate, timeout: 5)
        try download.send(.fetchUpdate(FetchUpdate(roundID: 100, modelVersion: 0)), endOfStream: true)
        var sequences: [UInt64] = []
        while let message = try download.receive() {
            if case .heartbeat(let beat) = message { sequences.append(beat.sequence) }
        }
        #expect(sequences == Array(0..<100))
    }

    @Test("Many calls at once on one connection do not mix")
    func concurrentCalls() throws {
        let server = try TestServer(delegate: TestServerDelegate(onCall: Self.handler))
        let (connection, _) = try server.connect()
        defer { connection.close() }
        let failures = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 16) { index in
            do {
                let call = try connection.makeCall(method: Methods.pullUpdate, timeout: 10)
                try call.send(.fetchUpdate(FetchUpdate(roundID: UInt64(index + 1), modelVersion: 0)), endOfStream: true)
                var seen: UInt64 = 0
                while let message = try call.receive() {
                    guard case .heartbeat(let beat) = message, beat.sequence == seen else { throw RPCError(.internalError, "out of order") }
                    seen += 1
                }
                if seen != UInt64(index + 1) { failures.add(1, ordering: .relaxed) }
            } catch {
                failures.add(1, ordering: .relaxed)
            }
        }
        #expect(failures.load(ordering: .relaxed) == 0)
    }

    @Test("A call past its deadline fails with DEADLINE_EXCEEDED and the connection stays usable")
    func deadline() throws {
        let server = try TestServer(delegate: TestServerDelegate(onCall: Self.handler))
        let (connection, _) = try server.connect()
        defer { connection.close() }
        var ready = UpdateReady()
        ready.exampleCount = 1
        let error = #expect(throws: RPCError.self) {
            try connection.unary(Methods.announceUpdate, .updateReady(ready), timeout: 0.3, metadata: ["x-slow": "1"])
        }
        #expect(error?.code == .deadlineExceeded)
        #expect(error?.message.contains("deadline of 0.3 s") == true)
        guard case .empty = try connection.unary(Methods.announceUpdate, .updateReady(ready), timeout: 5) else {
            Issue.record("expected Empty")
            return
        }
    }

    @Test("The coordinator calls the agent over the connection the agent dialled")
    func reverseDirection() throws {
        let server = try TestServer()
        let (connection, _) = try server.connect("hospital-a") { call in
            guard case .cancelTask(let cancel) = try call.receiveOnly() else { throw RPCError(.invalidArgument, "CancelTask expected") }
            if cancel.roundID == 99 { throw RPCError(.notFound, "no task for round 99") }
            try call.send(.empty)
        }
        defer { connection.close() }
        #expect(server.eventually { server.delegate.joined.count == 1 })
        let agentConnection = try #require(server.delegate.joined.first)
        guard case .empty = try agentConnection.unary(Methods.cancel, .cancelTask(CancelTask(roundID: 3, reason: "round closed")), timeout: 5) else {
            Issue.record("expected Empty")
            return
        }
        let error = #expect(throws: RPCError.self) {
            try agentConnection.unary(Methods.cancel, .cancelTask(CancelTask(roundID: 99, reason: "x")), timeout: 5)
        }
        #expect(error?.code == .notFound)
    }

    @Test("Heartbeats flow both ways; a silent agent is declared dead within three intervals")
    func heartbeatsAndLiveness() throws {
        // Intervals long enough that a machine busy with the rest of the suite still keeps time.
        let server = try TestServer(delegate: TestServerDelegate(onCall: Self.handler)) {
            $0.connection.heartbeatInterval = 0.4
            $0.connection.livenessTimeout = 1.2
        }
        // An agent that heartbeats stays alive through 2 s of otherwise silent "training".
        let (alive, welcome) = try server.connect("hospital-a", options: .defaults {
            $0.heartbeatInterval = 0.4
            $0.livenessTimeout = 1.2
        })
        defer { alive.close() }
        #expect(welcome.heartbeatIntervalMs == 400)
        // An agent that sends nothing after joining.
        let (silent, _) = try server.connect("hospital-b", options: .defaults { $0.heartbeatInterval = nil })
        defer { silent.close() }
        let started = Deadline.now
        #expect(server.eventually(5) { server.delegate.closed.contains { $0.0 == "hospital-b" } })
        let detectedAfter = -started.remainingSeconds
        #expect(detectedAfter < 4, "noticed after \(detectedAfter) s")
        let reason = server.delegate.closed.first { $0.0 == "hospital-b" }?.1
        #expect(reason?.code == .timedOut)
        usleep(2_000_000)
        #expect(!alive.isClosed)
        #expect(alive.heartbeatsReceived >= 3)
        #expect(!server.delegate.closed.contains { $0.0 == "hospital-a" })
    }

    @Test("200 agents handshaking at once are all served")
    func twoHundredConnections() throws {
        let server = try TestServer()
        let context = try sharedFederation.clientContext("hospital-a")
        let port = server.port
        let joined = Atomic<Int>(0)
        let errors = Mutex<[String]>([])
        let allJoined = DispatchSemaphore(value: 0)
        let group = DispatchGroup()
        let go = DispatchSemaphore(value: 0)
        for _ in 0..<200 {
            group.enter()
            // One thread per agent, released together: the 200 handshakes overlap.
            WorkerThreadForTests.start {
                defer { group.leave() }
                go.wait()
                do {
                    let (connection, welcome) = try WireClient.connect(
                        host: "127.0.0.1", port: port, context: context, hello: Hello(), options: ConnectionOptions(),
                        timeout: 60, logger: Logger(label: "t") { _ in SwiftLogNoOpLogHandler() }, handler: { _ in })
                    if welcome.agentID == "hospital-a" && joined.add(1, ordering: .relaxed).newValue == 200 { allJoined.signal() }
                    // Hold the connection until every agent has joined: all 200 are open at once.
                    _ = allJoined.wait(timeout: .now() + 60)
                    allJoined.signal()
                    connection.close()
                } catch {
                    errors.withLock { $0.append("\(error)") }
                    allJoined.signal()
                }
            }
        }
        for _ in 0..<200 { go.signal() }
        group.wait()
        #expect(server.delegate.joined.count == 200)
        #expect(joined.load(ordering: .relaxed) == 200, "errors: \(errors.withLock { Array($0.prefix(3)) })")
        #expect(server.eventually(10) { server.server.activeConnections.isEmpty })
    }
}

enum WorkerThreadForTests {
    static func start(_ body: @escaping @Sendable () -> Void) {
        let thread = Thread(block: body)
        thread.stackSize = 1 << 20
        thread.start()
    }
}
