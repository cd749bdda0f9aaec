import Foundation
@testable import GatehouseServer
import Testing

/// Memory freed in the middle of the heap goes back to the system (a burst of large events left
/// 100–190 MB resident for good without it).
struct HeapReturnTests {
    /// The process's resident anonymous memory, from /proc.
    func residentAnonymous() throws -> Int {
        let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("RssAnon:") })
        return try #require(Int(line.split(separator: " ", omittingEmptySubsequences: true)[1])) * 1024
    }

    @Test func freedHolesInTheHeapAreGivenBack() throws {
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
        for block in large { free(block) }
        let before = try residentAnonymous()
        #expect(!HeapReturn.pass(threshold: Int.max), "a heap with less free than the threshold is left alone")
        #expect(HeapReturn.pass(threshold: 8 << 20))
        let after = try residentAnonymous()
        // ~195 MB were freed; other tests running beside this one allocate far less meanwhile.
        #expect(before - after > 100 << 20, "resident anonymous memory went from \(before >> 20) MB to \(after >> 20) MB")
    }
}
