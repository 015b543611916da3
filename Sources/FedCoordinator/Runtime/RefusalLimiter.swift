/// Decides which connection refusals become round-log records: at most one per address and
/// reason every `interval` seconds, the next one carrying how many came in between, so that a
/// stranger's handshake flood cannot grow the log (or its fsyncs) without bound. Pure: time is
/// passed in. Memory: at most ``capacity`` keys (the oldest is forgotten first).
struct RefusalLimiter {
    struct Key: Hashable {
        var host: String
        var reason: String
    }

    private struct Entry {
        var recordedAt: Double
        var suppressed: UInt64
    }

    let interval: Double
    let capacity: Int
    private var entries: [Key: Entry] = [:]

    init(interval: Double, capacity: Int = 4096) {
        self.interval = interval
        self.capacity = capacity
    }

    /// Whether to record this refusal now; if so, how many refusals it stands for (itself and
    /// those suppressed since the last record of the same key).
    mutating func admit(_ key: Key, now: Double) -> UInt64? {
        if var entry = entries[key] {
            if now - entry.recordedAt < interval {
                entry.suppressed += 1
                entries[key] = entry
                return nil
            }
            entries[key] = Entry(recordedAt: now, suppressed: 0)
            return entry.suppressed + 1
        }
        if entries.count >= capacity, let oldest = entries.min(by: { $0.value.recordedAt < $1.value.recordedAt })?.key {
            entries.removeValue(forKey: oldest)
        }
        entries[key] = Entry(recordedAt: now, suppressed: 0)
        return 1
    }
}
