import Foundation
@testable import GatehouseServer
import Testing

/// Memory freed in the middle of the heap goes back to the system (a burst of large events left
/// 100–190 MB resident for good without it), once per burst.
struct HeapReturnTests {
    @Test func freedHolesInTheHeapAreGivenBackOncePerBurst() throws {
        let trimmer = HeapTrimmer(threshold: 8 << 20)
        // 2,000 blocks of 100 KB (under glibc's mmap threshold, so from the heap), each followed
        // by a small block that stays (4 KB: too large for the per-thread caches, so cut from the
        // heap right after it): once the large ones are freed, their holes can be neither
        // merged nor trimmed from the heap's top, and stay resident — as a burst's did.
        let count = 2000, size = 100 << 10
        var large: [UnsafeMutableRawPointer] = []
        var pins: [UnsafeMutableRawPointer] = []
        for _ in 0..<count {
            let block = try #require(malloc(size))
            memset(block, 0x5A, size)
            large.append(block)
            pins.append(try #require(malloc(4096)))
        }
        defer { for pin in pins { free(pin) } }
        // Read at the peak: a server of another test trimming meanwhile only helps.
        let peak = try #require(HeapTrimmer.residentAnonymousBytes())
        for block in large { free(block) }
        #expect(trimmer.pass())
        let after = try #require(HeapTrimmer.residentAnonymousBytes())
        // ~195 MB were freed; other tests running beside this one allocate far less meanwhile.
        #expect(peak - after > 100 << 20, "resident anonymous memory went from \(peak >> 20) MB to \(after >> 20) MB")
        // The heap still reports those bytes free, but nothing grew: no second trim.
        #expect(!trimmer.pass())
    }
}
