#if canImport(Glibc)
import Glibc
#endif

/// A point in monotonic time after which an operation gives up.
///
/// Wall-clock jumps do not move it. ``distantFuture`` means "wait forever".
public struct Deadline: Sendable, Comparable, Hashable {
    /// Nanoseconds on `CLOCK_MONOTONIC`.
    public let uptimeNanoseconds: UInt64

    public init(uptimeNanoseconds: UInt64) { self.uptimeNanoseconds = uptimeNanoseconds }

    /// The current monotonic time.
    public static var now: Deadline {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Deadline(uptimeNanoseconds: UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec))
    }

    /// A deadline that never passes.
    public static let distantFuture = Deadline(uptimeNanoseconds: .max)

    /// `seconds` from now; a non-positive value is already past.
    public static func after(seconds: Double) -> Deadline {
        guard seconds.isFinite else { return .distantFuture }
        let now = Deadline.now.uptimeNanoseconds
        if seconds <= 0 { return Deadline(uptimeNanoseconds: now) }
        let delta = seconds * 1e9
        if delta >= Double(UInt64.max - now) { return .distantFuture }
        return Deadline(uptimeNanoseconds: now + UInt64(delta))
    }

    public var isDistantFuture: Bool { uptimeNanoseconds == .max }
    public var hasPassed: Bool { !isDistantFuture && Deadline.now >= self }

    /// Seconds left (negative once past; `.infinity` for ``distantFuture``).
    public var remainingSeconds: Double {
        if isDistantFuture { return .infinity }
        let now = Deadline.now.uptimeNanoseconds
        return now >= uptimeNanoseconds
            ? -Double(now - uptimeNanoseconds) / 1e9 : Double(uptimeNanoseconds - now) / 1e9
    }

    /// The timeout to hand to `poll(2)`: -1 for forever, at least 0, capped at `Int32.max` ms.
    var pollTimeoutMilliseconds: Int32 {
        if isDistantFuture { return -1 }
        let remaining = remainingSeconds
        if remaining <= 0 { return 0 }
        return Int32(min(Double(Int32.max), (remaining * 1000).rounded(.up)))
    }

    /// The earlier of two deadlines.
    public func earlier(_ other: Deadline) -> Deadline { min(self, other) }

    public static func < (lhs: Deadline, rhs: Deadline) -> Bool { lhs.uptimeNanoseconds < rhs.uptimeNanoseconds }
}
