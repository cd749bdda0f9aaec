import HeapShim
import ServiceLifecycle

/// Gives the memory the C heap holds free back to the system, every `interval`, once there is
/// enough of it to matter.
///
/// Why: glibc keeps what a thread frees in that thread's arena for reuse, and raises its mmap
/// threshold after each large free, so the peak of a burst of large events — a receiver's
/// queue of 256 events of ~150 KB, their rendered webhooks, the request bodies — stayed
/// resident for good: 97–188 MB of heap after 10,000 events at the size limits, in a process
/// whose live heap was under 40 MB once they were delivered. A trim walks every arena under
/// its lock, so it runs on a timer, never per request.
struct HeapReturn: Service {
    var interval: Duration = .seconds(5)
    /// Free heap below this is left alone: the allocator's working reserve, not worth the
    /// page faults of taking it back.
    var threshold = 8 << 20

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                guard !Task.isCancelled else { return }
                Self.pass(threshold: threshold)
            }
        }
    }

    /// One look at the heap: true when it held at least `threshold` bytes free and was trimmed.
    @discardableResult
    static func pass(threshold: Int) -> Bool {
        guard gh_heap_free_bytes() >= threshold else { return false }
        _ = gh_heap_return_free()
        return true
    }
}
