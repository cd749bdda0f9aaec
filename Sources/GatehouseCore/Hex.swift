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
