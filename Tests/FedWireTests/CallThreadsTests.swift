import FedProtocol
import Foundation
import Synchronization
import Testing
@testable import FedWire

/// How many threads a peer's calls get: at most `maxCallThreads` run at once, the others wait
/// for one without a thread of their own, and a waiting call cannot block the connection.
@Suite("Call threads")
struct CallThreadsTests {
    @Test("24 slow calls on one connection run four at a time on four threads, each answered")
    func boundedThreads() throws {
        let running = Mutex((now: 0, peak: 0, threads: Set<pthread_t>()))
        let server = try TestServer(delegate: TestServerDelegate { call in
            _ = try call.receiveOnly()
            running.withLock {
                $0.now += 1
                $0.peak = max($0.peak, $0.now)
                $0.threads.insert(pthread_self())
            }
            usleep(200_000)
            running.withLock { $0.now -= 1 }
            try call.send(.empty)
        }) { $0.connection.maxCallThreads = 4 }
        let (connection, _) = try server.connect()
        defer { connection.close() }
        var calls: [ClientCall] = []
        for _ in 0..<24 {
            let call = try connection.makeCall(method: Methods.announceUpdate, timeout: 20)
            try call.send(.updateReady(UpdateReady()), endOfStream: true)
            calls.append(call)
        }
        var answered = 0
        for call in calls {
            if case .empty? = try call.receive() { answered += 1 }
            try call.expectEnd()
        }
        #expect(answered == 24)
        #expect(running.withLock { $0.peak } == 4)
        // The waiting calls ran on the four threads as they came free: none had its own.
        #expect(running.withLock { $0.threads.count } == 4)
    }

    @Test("A waiting call that sends more than its inbox holds is refused RESOURCE_EXHAUSTED; the running call and the connection go on")
    func waitingCallCannotBlockTheReader() throws {
        let release = DispatchSemaphore(value: 0)
        let server = try TestServer(delegate: TestServerDelegate { call in
            if call.metadata["x-hold"] != nil { release.wait() }
            while try call.receive() != nil {}
            try call.send(.empty)
        }) { $0.connection.maxCallThreads = 1 }
        let (connection, _) = try server.connect()
        defer { connection.close() }
        let held = try connection.makeCall(method: Methods.evaluate, timeout: 20, metadata: ["x-hold": "1"])
        try held.send(.empty, endOfStream: true)
        let flood = try connection.makeCall(method: Methods.evaluate, timeout: 20)
        for index in 0..<10 { try flood.send(.heartbeat(Heartbeat(sequence: UInt64(index)))) }
        let refused = #expect(throws: RPCError.self) { _ = try flood.receive() }
        #expect(refused?.code == .resourceExhausted, "\(String(describing: refused))")
        #expect(refused?.message.contains("waited for a handler thread") == true)
        release.signal()
        guard case .empty? = try held.receive() else {
            Issue.record("the held call was not answered")
            return
        }
        // The connection still serves calls.
        guard case .empty = try connection.unary(Methods.evaluate, .empty, timeout: 5) else {
            Issue.record("expected Empty")
            return
        }
        #expect(!connection.isClosed)
    }
}
