#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Random numbers from the kernel's CSPRNG, read 4 KiB at a time and handed out once each.
///
/// `SystemRandomNumberGenerator` makes a `getrandom` system call for every `next()`: an alert
/// drew three (its delivery's id: two; its retry jitter: one), ~3 of the ~15 system calls the
/// server made per alert under load. The bytes here are the same kernel bytes, each used once,
/// so ids made from them are as unpredictable as before. Gatehouse never forks without exec, so
/// no child can hand out the parent's buffered bytes again.
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
    static let size = 4096

    private struct Buffer: ~Copyable {
        var bytes = [UInt8](repeating: 0, count: RandomPool.size)
        /// How many bytes from the front are used up; `size` means refill before use.
        var used = RandomPool.size
    }

    private let buffer = Mutex(Buffer())
    /// /dev/urandom, opened once; -1 when it could not be (then every draw is a system call).
    private let device: Int32 = open("/dev/urandom", O_RDONLY | O_CLOEXEC)

    /// Eight unused bytes, or nil when the kernel would not give more.
    func next() -> UInt64? {
        guard device >= 0 else { return nil }
        return buffer.withLock { buffer -> UInt64? in
            if buffer.used + 8 > Self.size {
                guard Self.fill(&buffer.bytes, from: device) else { return nil }
                buffer.used = 0
            }
            var value: UInt64 = 0
            for i in 0..<8 { value = value << 8 | UInt64(buffer.bytes[buffer.used + i]) }
            buffer.used += 8
            return value
        }
    }

    /// The whole buffer from the device (a read of /dev/urandom can stop short on a signal).
    private static func fill(_ bytes: inout [UInt8], from device: Int32) -> Bool {
        bytes.withUnsafeMutableBytes { raw -> Bool in
            var filled = 0
            while filled < raw.count {
                let n = read(device, raw.baseAddress! + filled, raw.count - filled)
                if n > 0 {
                    filled += n
                } else if n < 0 && errno == EINTR {
                    continue
                } else {
                    return false
                }
            }
            return true
        }
    }
}
