extension Array where Element == UInt8 {
    /// Bytes from hex; stops at the first bad pair.
    public init(hexString: String) {
        self.init()
        var chars = Array(hexString.utf8).makeIterator()
        while let a = chars.next(), let b = chars.next() {
            guard let byte = UInt8(String(decoding: [a, b], as: UTF8.self), radix: 16) else { return }
            append(byte)
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
