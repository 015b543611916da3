/// The neighbour graph of a round (§2.4): complete, or a Harary graph `H_{k,N}` on a ring whose
/// labels are a uniformly random permutation derived from the public graph seed, so that every
/// agent recomputes and verifies it.
public struct SecAggGraph: Sendable, Equatable {
    /// The ring: agent indices in ring order.
    public let ring: [UInt32]
    public let agentCount: Int
    public let degree: Int
    private let position: [UInt32: Int]

    public init(config: SecAggConfig, configDigest: [UInt8]) throws {
        let n = config.roster.count
        var context = ByteWriter()
        context.u64(config.roundID)
        context.u32(UInt32(n))
        let seed = try SecAggCrypto.hkdf(ikm: config.graphSeed, salt: configDigest, label: "graph", context: context.bytes, length: 32)
        let stream = try MaskGenerator(seed: seed)
        var ring = (1...UInt32(max(n, 1))).map { $0 }
        if n > 1 {
            for i in stride(from: n - 1, through: 1, by: -1) {
                let bound = UInt64(i + 1)
                let limit = (UInt64(1) << 32) - ((UInt64(1) << 32) % bound)
                var r = UInt64(stream.next(1)[0])
                while r >= limit { r = UInt64(stream.next(1)[0]) }
                ring.swapAt(i, Int(r % bound))
            }
        }
        self.ring = ring
        agentCount = n
        degree = min(Int(config.neighborDegree), n - 1)
        position = Dictionary(uniqueKeysWithValues: ring.enumerated().map { ($1, $0) })
    }

    public var isComplete: Bool { degree >= agentCount - 1 }

    /// `N(u)`: the neighbours of `u`, without `u`.
    public func neighbours(of u: UInt32) -> Set<UInt32> {
        if isComplete { return Set((1...UInt32(agentCount)).filter { $0 != u }) }
        guard let p = position[u] else { return [] }
        var result = Set<UInt32>()
        for d in 1...(degree / 2) {
            result.insert(ring[(p + d) % agentCount])
            result.insert(ring[(p - d + agentCount) % agentCount])
        }
        return result
    }

    /// `H(u) = {u} ∪ N(u)`: the holders of `u`'s shares.
    public func holders(of u: UInt32) -> Set<UInt32> { neighbours(of: u).union([u]) }

    /// Whether the graph restricted to `nodes` is connected (a split would reveal partial sums).
    public func isConnected(_ nodes: Set<UInt32>) -> Bool {
        guard let start = nodes.first else { return true }
        var seen: Set<UInt32> = [start], queue = [start]
        while let node = queue.popLast() {
            for next in neighbours(of: node) where nodes.contains(next) && !seen.contains(next) {
                seen.insert(next)
                queue.append(next)
            }
        }
        return seen.count == nodes.count
    }

    /// SecAgg+ `(k, t)` for `N` agents (§6.3 table, γ = 0.05, δ = 0.1 and 0.3 rows; the
    /// largest tabulated `N` not above the cohort). Nil below 200 agents: use the complete graph.
    public static func sparseParameters(agents n: Int, dropoutFraction δ: Double) -> (k: Int, t: Int)? {
        guard n > 200 else { return nil }
        let columns = [200, 500, 1000, 2000, 5000, 10000]
        let rows: [[(Int, Int)]] = [
            [(24, 11), (32, 17), (36, 19), (38, 20), (40, 21), (42, 22)],  // γ 0.05, δ 0.1
            [(38, 11), (58, 20), (66, 23), (70, 25), (76, 27), (80, 29)],  // γ 0.05, δ 0.3
        ]
        let row = δ <= 0.1 ? rows[0] : rows[1]
        let column = columns.lastIndex { $0 <= n } ?? 0
        return row[column]
    }
}
