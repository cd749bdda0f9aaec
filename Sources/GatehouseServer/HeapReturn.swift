import Foundation
import HeapShim
import ServiceLifecycle
import Synchronization

/// Gives the memory the C heap holds free back to the system, every `interval`, once the
/// process's resident memory has grown by `threshold` since the last time and the heap holds
/// at least that much free.
///
/// Why: glibc keeps what a thread frees in that thread's arena for reuse, and raises its mmap
/// threshold after each large free, so the peak of a burst of large events — a receiver's
/// queue of 256 events of ~150 KB, their rendered webhooks, the request bodies — stayed
/// resident for good: 97–188 MB of heap after 10,000 events at the size limits, in a process
/// whose live heap was under 40 MB once they were delivered. A trim walks every arena under
/// its lock (15–20 ms for a heap of 200 MB of holes), and the free bytes the heap reports do
/// not fall after one (the chunks stay free, their pages returned), so the trigger is growth of
/// resident memory, not free bytes: one trim per burst, none while the process stays the size
/// it is.
struct HeapReturn: Service {
    var interval: Duration = .seconds(5)
    var threshold = 8 << 20

    func run() async throws {
        let trimmer = HeapTrimmer(threshold: threshold)
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                guard !Task.isCancelled else { return }
                trimmer.pass()
            }
        }
    }
}

/// The decision and the trim (see `HeapReturn`).
final class HeapTrimmer: Sendable {
    let threshold: Int
    /// Resident anonymous memory right after the last trim (0 before the first).
    private let floor = Atomic<Int>(0)

    init(threshold: Int) { self.threshold = threshold }

    /// One look: true when resident memory had grown by `threshold` since the last trim, the
    /// heap held at least `threshold` free, and it was trimmed.
    @discardableResult
    func pass() -> Bool {
        guard let resident = Self.residentAnonymousBytes(), resident >= floor.load(ordering: .relaxed) + threshold,
              gh_heap_free_bytes() >= threshold
        else { return false }
        _ = gh_heap_return_free()
        floor.store(Self.residentAnonymousBytes() ?? resident, ordering: .relaxed)
        return true
    }

    /// Resident memory not backed by a file (`RssAnon`): `/proc/self/statm`'s resident pages
    /// less its shared ones. Nil where there is no /proc.
    static func residentAnonymousBytes() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return nil }
        let fields = text.split(separator: " ")
        guard fields.count >= 3, let resident = Int(fields[1]), let shared = Int(fields[2]) else { return nil }
        return (resident - shared) * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}
