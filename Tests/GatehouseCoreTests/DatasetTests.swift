import GatehouseCore
import Testing

struct AgreementTests {
    /// Wikipedia's worked example for Cohen's kappa: 50 proposals, two readers; 20 yes/yes,
    /// 5 yes/no, 10 no/yes, 15 no/no → pₒ = 0.7, pₑ = 0.5, κ = 0.4.
    @Test func cohenWorkedExample() throws {
        let pairs = Array(repeating: ("yes", "yes"), count: 20) + Array(repeating: ("yes", "no"), count: 5)
            + Array(repeating: ("no", "yes"), count: 10) + Array(repeating: ("no", "no"), count: 15)
        let kappa = try #require(Agreement.cohen(pairs))
        #expect(abs(kappa - 0.4) < 1e-9)
        #expect(Agreement.cohen([("a", "a"), ("b", "b")]) == 1)
        #expect(Agreement.cohen([]) == nil)
    }

    /// Wikipedia's worked example for Fleiss' kappa: 10 subjects, 14 raters, 5 categories → κ ≈ 0.210.
    @Test func fleissWorkedExample() throws {
        let table = [
            [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
        ]
        let kappa = try #require(Agreement.fleiss(table))
        #expect(abs(kappa - 0.20993) < 1e-4)
        #expect(Agreement.fleiss([[1, 1], [2]]) == nil)
        #expect(Agreement.fleiss([[1, 1], [3, 0]]) == nil)
    }

    @Test func kappaPicksTheStatisticByRaterCount() throws {
        let two = [["\"pos\"", "\"pos\""], ["\"neg\"", "\"pos\""], ["\"neg\"", "\"neg\""], ["\"pos\""]]
        // The incomplete item is left out: po = 2/3, pe = (1/3·2/3 + 2/3·1/3)... via Cohen.
        #expect(Agreement.kappa(items: two, raters: 2) == Agreement.cohen([("\"pos\"", "\"pos\""), ("\"neg\"", "\"pos\""), ("\"neg\"", "\"neg\"")]))
        let three = [["a", "a", "a"], ["a", "b", "b"], ["b", "b", "b"]]
        #expect(Agreement.kappa(items: three, raters: 3) == Agreement.fleiss([[3, 0], [1, 2], [0, 3]]))
        #expect(Agreement.kappa(items: three, raters: 1) == nil)
    }

    @Test func majorityPerTask() {
        let classes = DatasetSpec(name: "d", task: .classification, labels: ["pos", "neg", "neutral"])
        #expect(Agreement.majority([.string("neg"), .string("pos"), .string("neg")], spec: classes) == .string("neg"))
        #expect(Agreement.majority([.string("neg"), .string("pos")], spec: classes) == .string("pos"))
        let multi = DatasetSpec(name: "d", task: .multilabel, labels: ["a", "b", "c"])
        #expect(Agreement.majority([.array([.string("a"), .string("b")]), .array([.string("a")]), .array([.string("b"), .string("a")])], spec: multi)
                == .array([.string("a"), .string("b")]))
        let spans = DatasetSpec(name: "d", task: .spans, labels: ["PER"])
        let span = JSONValue.object(JSONObject([("start", .int(0)), ("end", .int(3)), ("label", .string("PER"))]))
        #expect(Agreement.majority([.array([span]), .array([]), .array([span])], spec: spans) == .array([span]))
    }
}

struct DatasetSpecTests {
    @Test func validatesSpecsItemsAndLabels() throws {
        guard case .failure(let p) = DatasetSpec.parse(try JSONValue.parse(#"{"name":"bad name","task":"boxes","labels":[],"annotators_per_item":0,"x":1}"#)) else {
            Issue.record("accepted"); return
        }
        #expect(Set(p.errors.map(\.field)) == ["name", "task", "labels", "annotators_per_item", "x"])
        let spec = try DatasetSpec.parse(try JSONValue.parse(#"{"name":"ner-1","task":"spans","labels":["PER","ORG"]}"#)).get()
        // Offsets are UTF-16, as a browser selection gives them.
        let text = "Ada 👩‍💻 Lovelace"
        let ok = spec.normalize(try JSONValue.parse(#"[{"start":10,"end":18,"label":"PER"}]"#), text: text)
        #expect((try? ok.get())?.arrayValue?.first?.objectValue?["text"] == .string("Lovelace"))
        guard case .failure(let e) = spec.normalize(try JSONValue.parse(#"[{"start":9,"end":99,"label":"PER"}]"#), text: text) else { Issue.record("span past the end"); return }
        #expect(e.field == "spans[0]")
        // Offsets past Int's range are refused, not a crash (1e300 is a whole number).
        for end in ["1e300", "9.3e18", "1e19"] {
            guard case .failure(let e) = spec.normalize(try JSONValue.parse(#"[{"start":0,"end":\#(end),"label":"PER"}]"#), text: text) else { Issue.record("end \(end)"); return }
            #expect(e.field == "spans[0]")
        }
        guard case .failure = DatasetItem.parse(try JSONValue.parse(#"{"id":"9","data":{"text":"Ada"},"prediction":[{"start":0,"end":1e300,"label":"PER"}]}"#), for: spec) else {
            Issue.record("a prediction past Int's range")
            return
        }
        guard case .failure = DatasetItem.parse(try JSONValue.parse(#"{"id":"1","data":{"image_url":"https://x/y.png"}}"#), for: spec) else { Issue.record("spans item without text"); return }
        let item = try DatasetItem.parse(try JSONValue.parse(#"{"id":"1","data":{"text":"Ada"},"prediction":[{"start":0,"end":3,"label":"PER"}]}"#), for: spec).get()
        #expect(item.prediction?.arrayValue?.count == 1)
        // Lengths count Unicode scalars: one "character" of 5,000 combining marks is not an id
        // of one character (it would pass a database index's limit).
        let heavy = JSONValue.object(JSONObject([("id", .string("e" + String(repeating: "\u{301}", count: 5000))), ("data", .object(JSONObject([("text", .string("Ada"))])))]))
        guard case .failure(let tooLong) = DatasetItem.parse(heavy, for: spec) else { Issue.record("accepted an id of 5,001 scalars"); return }
        #expect(tooLong.errors.map(\.field) == ["id"])
        let classes = DatasetSpec(name: "d", task: .classification, labels: ["pos", "neg"])
        #expect(try classes.normalize(try JSONValue.parse(#"{"label":"pos"}"#), text: nil).get() == .string("pos"))
        guard case .failure = classes.normalize(.string("meh"), text: nil) else { Issue.record("unknown label"); return }
    }
}

/// The streamed import's line splitter: chunk boundaries never change the lines.
struct NDJSONLinesTests {
    @Test func linesAreTheSameWhateverTheChunks() {
        let body = Array("{\"id\":\"a\"}\n\n  \r\n{\"id\":\"b\"}\r\n{\"id\":\"c\"}".utf8)
        var whole = NDJSONLines()
        var all = whole.feed(body)
        if let last = whole.finish() { all.append(last) }
        #expect(all.map(\.line) == [1, 4, 5])
        #expect(all.map { String(decoding: $0.bytes, as: UTF8.self) } == ["{\"id\":\"a\"}", "{\"id\":\"b\"}\r", "{\"id\":\"c\"}"])
        for size in 1...7 {
            let lines = Self.split(body, size: size)
            #expect(lines.map(\.line) == all.map(\.line) && lines.map(\.bytes) == all.map(\.bytes), "chunks of \(size)")
        }
    }

    /// `body` fed in chunks of `size` bytes, and then finished.
    static func split(_ body: [UInt8], size: Int) -> [(line: Int, bytes: [UInt8])] {
        var splitter = NDJSONLines()
        var lines: [(line: Int, bytes: [UInt8])] = []
        var offset = 0
        while offset < body.count {
            lines += splitter.feed(body[offset..<min(body.count, offset + size)])
            offset += size
        }
        if let last = splitter.finish() { lines.append(last) }
        return lines
    }

    /// A byte order mark opening the body is skipped, however the body is cut (a Windows
    /// tool's file was refused: "unexpected character 'ï' at column 1"); elsewhere it stays.
    @Test func aByteOrderMarkOpeningTheBodyIsSkipped() {
        func split(_ body: [UInt8], size: Int) -> [String] {
            Self.split(body, size: size).map { String(decoding: $0.bytes, as: UTF8.self) }
        }
        let marked = [0xEF, 0xBB, 0xBF] + Array("{\"id\":\"a\"}\n\u{FEFF}{\"id\":\"b\"}".utf8)
        for size in 1...5 {
            #expect(split(marked, size: size) == ["{\"id\":\"a\"}", "\u{FEFF}{\"id\":\"b\"}"], "chunks of \(size)")
        }
        #expect(NDJSONLines.lines(in: marked[...]).map { String(decoding: $0.bytes, as: UTF8.self) } == ["{\"id\":\"a\"}", "\u{FEFF}{\"id\":\"b\"}"])
        // Shorter than a mark, or a mark's first bytes and then something else: kept as sent.
        #expect(split([0xEF, 0xBB], size: 1) == [String(decoding: [0xEF, 0xBB] as [UInt8], as: UTF8.self)])
        #expect(split([0xEF, 0x41, 0x0A], size: 1) == [String(decoding: [0xEF, 0x41] as [UInt8], as: UTF8.self)])
    }
}
