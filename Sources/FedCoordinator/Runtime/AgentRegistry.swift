import FedProtocol
import FedWire
import Foundation

/// The agents joined now: each site's certificate name and its current connection (a reconnect
/// replaces the previous one). Safe from any thread; O(1) per call.
final class AgentRegistry: @unchecked Sendable {
    // @unchecked: `connections` is guarded by `lock`.
    private let lock = NSLock()
    private var connections: [String: RPCConnection] = [:]

    /// The agent's current connection, if it is joined.
    func connection(_ agent: String) -> RPCConnection? {
        lock.withLock { connections[agent] }
    }

    /// The agent's current connection.
    /// - Throws: `WireError(.connectionClosed)` when it is not joined.
    func connected(_ agent: String) throws -> RPCConnection {
        guard let connection = connection(agent) else { throw WireError(.connectionClosed, "the agent is not connected") }
        return connection
    }

    /// Whether `connection` is the agent's current one.
    func isCurrent(_ agent: String, _ connection: RPCConnection) -> Bool {
        lock.withLock { connections[agent] === connection }
    }

    /// Makes `connection` the agent's current one; returns the one it replaces.
    func register(_ agent: String, _ connection: RPCConnection) -> RPCConnection? {
        lock.withLock {
            defer { connections[agent] = connection }
            return connections[agent]
        }
    }

    /// Forgets the agent if `connection` is still its current one; returns whether it was.
    func remove(_ agent: String, ifCurrent connection: RPCConnection) -> Bool {
        lock.withLock {
            guard connections[agent] === connection else { return false }
            connections.removeValue(forKey: agent)
            return true
        }
    }
}
