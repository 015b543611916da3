import Foundation

/// What arrives for one call, in order.
enum InboxItem<Body: Sendable> {
    case message(Body)
    /// The caller sent its last message (server side).
    case endOfStream
    /// The callee ended the call (client side).
    case status(RPCStatus)
    /// The caller cancelled (server side).
    case cancelled
    /// The connection failed.
    case failure(WireError)
}

/// A bounded blocking queue between a connection's reader thread and one call's consumer.
///
/// The reader blocks when the queue is full, which stops reading from the socket: backpressure
/// all the way to the sender's TCP window. Once the consumer is done (``close()``), further
/// items are dropped, so a finished call never blocks the reader.
final class CallInbox<Body: Sendable>: @unchecked Sendable {
    typealias Item = InboxItem<Body>
    // @unchecked: every field is guarded by `condition`.
    private let condition = NSCondition()
    /// Queued items; a popped slot is set to nil at once, so that a consumed chunk's buffer is
    /// released as soon as its consumer lets go, not when the queue next compacts.
    private var items: [Item?] = []
    private var head = 0
    private var isClosed = false
    private var terminal: Item?
    let capacity: Int

    init(capacity: Int) { self.capacity = capacity }

    /// Appends an item, waiting while the queue is full (unless it is closed).
    func push(_ item: Item) {
        condition.lock()
        defer { condition.unlock() }
        while !isClosed && items.count - head >= capacity { condition.wait() }
        if isClosed { return }
        items.append(item)
        condition.broadcast()
    }

    /// Appends all of `batch` if there is room for all of it now, without waiting; false (and
    /// nothing appended) otherwise. For a call that has no consumer yet, which the reader must
    /// never wait for.
    func pushIfRoom(_ batch: [Item]) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        if isClosed { return true }
        guard items.count - head + batch.count <= capacity else { return false }
        items.append(contentsOf: batch.map(Optional.some))
        condition.broadcast()
        return true
    }

    /// Delivers a final item (failure) even when the queue is full; later pops see it after the
    /// queued items.
    func fail(_ item: Item) {
        condition.lock()
        defer { condition.unlock() }
        if terminal == nil { terminal = item }
        condition.broadcast()
    }

    /// Takes the next item, waiting until `deadline`; nil at the deadline.
    func pop(until deadline: Deadline) -> Item? {
        condition.lock()
        defer { condition.unlock() }
        while head == items.count {
            if let terminal { return terminal }
            if !condition.wait(until: deadline) { return nil }
        }
        let item = items[head]!
        items[head] = nil
        head += 1
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 64 && head * 2 > items.count {
            items.removeFirst(head)
            head = 0
        }
        condition.broadcast()
        return item
    }

    /// The consumer is done: drop what is queued and everything that arrives later.
    func close() {
        condition.lock()
        isClosed = true
        items.removeAll()
        head = 0
        condition.broadcast()
        condition.unlock()
    }
}
