#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Random numbers from the kernel's CSPRNG, fetched 256 bytes at a time and handed out once each.
///
/// `SystemRandomNumberGenerator` makes a `getrandom` system call for every `next()`: an alert
/// drew three (its delivery's id: two; its retry jitter: one), ~3 of the ~15 system calls the
/// server made per alert under load. The bytes here come from `getentropy` — `getrandom`, which
/// like `SystemRandomNumberGenerator` waits for the kernel's generator to be seeded — each used
/// once, so ids made from them are as unpredictable as before. Gatehouse never forks without
/// exec, so no child can hand out the parent's buffered bytes again.
public struct PooledRandom: RandomNumberGenerator {
    public init() {}

    /// A uniform draw from 0..<1 (retry jitter).
    public static func fraction() -> Double {
        var generator = PooledRandom()
        return Double.random(in: 0..<1, using: &generator)
    }

    public mutating func next() -> UInt64 {
        if let value = RandomPool.shared.next() { return value }
        var system = SystemRandomNumberGenerator()
        return system.next()
    }
}

final class RandomPool: Sendable {
    static let shared = RandomPool()
    /// `getentropy`'s most per call.
    static let size = 256

    private struct Buffer: ~Copyable {
        var bytes = [UInt8](repeating: 0, count: RandomPool.size)
        /// How many bytes from the front are used up; `size` means refill before use.
        var used = RandomPool.size
    }

    private let buffer = Mutex(Buffer())

    /// Eight unused bytes, or nil when the kernel would not give more (then the caller asks
    /// `SystemRandomNumberGenerator`, which fails loudly if the kernel cannot).
    func next() -> UInt64? {
        buffer.withLock { buffer -> UInt64? in
            if buffer.used + 8 > Self.size {
                let failed = buffer.bytes.withUnsafeMutableBytes { getentropy($0.baseAddress, $0.count) } != 0
                if failed { return nil }
                buffer.used = 0
            }
            var value: UInt64 = 0
            for i in 0..<8 { value = value << 8 | UInt64(buffer.bytes[buffer.used + i]) }
            buffer.used += 8
            return value
        }
    }
}
