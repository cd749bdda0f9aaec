import Foundation
import GatehouseCore
import Synchronization
import Testing

struct PooledRandomTests {
    /// Many threads drawing at once, across many refills of the 256-byte pool: every draw is new
    /// (a byte handed out twice, or a refill that failed to happen, shows up as a repeat), and
    /// every bit is a fair coin (a stuck or zeroed buffer does not).
    @Test func concurrentDrawsAreEachNewAndUniform() {
        let threads = 8
        let perThread = 4_000  // 32,000 values: 1,000 refills
        let drawn = Mutex<[UInt64]>([])
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            var generator = PooledRandom()
            var mine: [UInt64] = []
            mine.reserveCapacity(perThread)
            for _ in 0..<perThread { mine.append(generator.next()) }
            drawn.withLock { $0 += mine }
        }
        let values = drawn.withLock { $0 }
        #expect(values.count == threads * perThread)
        #expect(Set(values).count == values.count)
        for bit in 0..<64 {
            let ones = values.reduce(0) { $0 + Int(($1 >> UInt64(bit)) & 1) }
            // Binomial(32,000, ½): σ ≈ 89, so ±700 is ~8 σ.
            #expect(abs(ones - values.count / 2) < 700, "bit \(bit) set in \(ones) of \(values.count)")
        }
    }

    @Test func fractionsStayInTheUnitInterval() {
        let fractions = (0..<10_000).map { _ in PooledRandom.fraction() }
        #expect(fractions.allSatisfy { $0 >= 0 && $0 < 1 })
        #expect(Set(fractions).count > 9_990)
        let mean = fractions.reduce(0, +) / Double(fractions.count)
        #expect(abs(mean - 0.5) < 0.02)
    }

    @Test func eventIDsAreUniqueAcrossThreads() {
        let ids = Mutex<Set<String>>([])
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            let mine = (0..<5_000).map { _ in EventValidator.generateID() }
            ids.withLock { $0.formUnion(mine) }
        }
        #expect(ids.withLock { $0.count } == 20_000)
    }

    /// "evt_", then the time in milliseconds (its low 48 bits) in 12 hex digits and 20 random
    /// ones: ids made later sort later, across a millisecond.
    @Test func eventIDsSpellTheirTime() {
        let before = UInt64(Timestamp.now().milliseconds)
        let id = EventValidator.generateID()
        let after = UInt64(Timestamp.now().milliseconds)
        #expect(id.count == 36)
        #expect(id.hasPrefix("evt_"))
        let digits = id.dropFirst(4)
        #expect(digits.allSatisfy { "0123456789abcdef".contains($0) }, "\(id)")
        let time = UInt64(digits.prefix(12), radix: 16)
        #expect(time.map { (before...after).contains($0) } == true, "\(id) at \(before)...\(after)")
        #expect(EventValidator.generateID() != id)
    }
}

