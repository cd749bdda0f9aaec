import Dispatch
import Synchronization

/// Runs submitted work in batches on one serial queue: whatever arrives while a batch is being
/// written waits and goes into the next batch together. This is group commit: under load one
/// transaction (and one fsync) serves many callers, and when idle a lone item is written at once.
final class GroupCommitQueue<Item: Sendable>: Sendable {
    private let queue: DispatchQueue
    private let pending = Mutex<(items: [Item], draining: Bool)>(([], false))

    init(label: String) {
        queue = DispatchQueue(label: label, qos: .userInitiated)
    }

    /// Adds `item`; `process` runs (on the queue) with every item gathered so far.
    func submit(_ item: Item, process: @escaping @Sendable ([Item]) -> Void) {
        let start = pending.withLock { state -> Bool in
            state.items.append(item)
            if state.draining { return false }
            state.draining = true
            return true
        }
        guard start else { return }
        queue.async {
            while true {
                let batch = self.pending.withLock { state -> [Item] in
                    let taken = state.items
                    state.items = []
                    if taken.isEmpty { state.draining = false }
                    return taken
                }
                if batch.isEmpty { return }
                process(batch)
            }
        }
    }
}
