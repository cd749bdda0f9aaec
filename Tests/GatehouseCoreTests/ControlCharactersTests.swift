import GatehouseCore
import Testing

struct ControlCharactersTests {
    /// The byte scan agrees with the scalar rule for every scalar of the Basic Multilingual Plane
    /// and some beyond, alone and after text whose last bytes could be taken for a lead-in
    /// (`é` ends in C3 A9, `€` is E2 82 AC, `…` is E2 80 A6, `‧` E2 80 A7).
    @Test func theByteScanAgreesWithTheScalarRule() {
        var disagreements: [String] = []
        for value in Array(0...0xFFFF) + [0x1F642, 0x10FFFF] {
            guard let scalar = Unicode.Scalar(value) else { continue }
            for prefix in ["", "a", "é", "€", "…", "\u{2027}"] {
                let text = prefix + String(Character(scalar)) + "z"
                if ControlCharacters.contains(text) != ControlCharacters.isControl(scalar) {
                    disagreements.append(String(value, radix: 16) + " after \"" + prefix + "\"")
                }
            }
        }
        #expect(disagreements.isEmpty, "\(disagreements.prefix(10))")
        #expect(ControlCharacters.removing(from: "deploy-\u{202E}gnp\u{85}.exe") == "deploy-gnp.exe")
    }
}
