extension Array where Element == UInt8 {
    /// Bytes from hex digits (either case); stops at the first pair that is not two of them.
    /// (`UInt8(_:radix:)` also takes a sign — "+f", "-0" — so one signature had several
    /// spellings, each a replay the nonce did not know.)
    public init(hexString: String) {
        self.init()
        func digit(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x41...0x46: return c - 0x41 + 10
            case 0x61...0x66: return c - 0x61 + 10
            default: return nil
            }
        }
        var chars = Array(hexString.utf8).makeIterator()
        while let a = chars.next(), let b = chars.next() {
            guard let high = digit(a), let low = digit(b) else { return }
            append(high << 4 | low)
        }
    }
}

extension Sequence where Element == UInt8 {
    /// Lowercase hex, two digits a byte.
    public var hexString: String {
        var out = ""
        for byte in self {
            out.unicodeScalars.append(hexDigit(byte >> 4))
            out.unicodeScalars.append(hexDigit(byte & 15))
        }
        return out
    }
}

private func hexDigit(_ n: UInt8) -> Unicode.Scalar { Unicode.Scalar(n < 10 ? 48 + n : 87 + n) }
