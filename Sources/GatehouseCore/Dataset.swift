import Foundation

/// What people do to a dataset's items (docs/datasets.md).
public enum LabelTask: String, Sendable, CaseIterable {
    /// One label per item.
    case classification
    /// Any number of the labels per item.
    case multilabel
    /// Labelled character ranges of the item's text.
    case spans
}

/// A dataset as created: what to label, with which labels, by how many people.
public struct DatasetSpec: Sendable, Equatable {
    public var name: String
    public var task: LabelTask
    public var labels: [String]
    public var instructions: String?
    public var annotatorsPerItem: Int

    public init(name: String, task: LabelTask, labels: [String], instructions: String? = nil, annotatorsPerItem: Int = 1) {
        self.name = name
        self.task = task
        self.labels = labels
        self.instructions = instructions
        self.annotatorsPerItem = annotatorsPerItem
    }

    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 100 && name.first != "." && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }
    }

    /// Validates `POST /v1/datasets` (or a labelling rule's rendered template), naming every
    /// bad field.
    public static func parse(_ value: JSONValue) -> Result<DatasetSpec, Problem> {
        Result { () throws(Problem) in try JSONValueDecoder().decode(DatasetSpec.self, from: value) }
    }

    /// A dataset about to be created: `parse`, and a spans label holding `,` or `|` refused —
    /// the labelling page and the form's spans text (`25-28:PER,30-33:LOC`) separate with them,
    /// so such a label shifted every key after it and could never be saved. Not in `parse`,
    /// which also reads back datasets made before this rule.
    public static func parseNew(_ value: JSONValue) -> Result<DatasetSpec, Problem> {
        parse(value).flatMap { spec in
            guard spec.task == .spans, let index = spec.labels.firstIndex(where: { $0.contains(",") || $0.contains("|") }) else { return .success(spec) }
            return .failure(.invalid([FieldError(
                field: "labels[\(index)]", detail: "\"\(spec.labels[index])\": a spans label has no , or | (the labelling page and the spans text separate with them)")]))
        }
    }

    enum CodingKeys: String, CodingKey, CaseIterable { case name, task, labels, instructions, annotators_per_item }

    /// The stored form, also the start of a dataset's API view; absent fields left out.
    public struct Document: Encodable, JSONOmitsAbsentFields {
        var name: String
        var task: String
        var labels: [String]
        var instructions: String?
        var annotators_per_item: Int
    }

    public var document: Document {
        Document(name: name, task: task.rawValue, labels: labels, instructions: instructions, annotators_per_item: annotatorsPerItem)
    }

    public var json: JSONValue { JSONValueEncoder.value(document) }

    /// Checks a label value for this dataset's task, normalising it: classification
    /// `"pos"` or `{"label":"pos"}`; multilabel `["a","b"]` or `{"labels":[…]}`; spans
    /// `[{"start":0,"end":5,"label":"PER"}]` or `{"spans":[…]}` with UTF-16 offsets inside
    /// `text` (what a browser's selection gives).
    public func normalize(_ value: JSONValue, text: String?) -> Result<JSONValue, FieldError> {
        switch task {
        case .classification:
            let label = value.stringValue ?? value.objectValue?["label"]?.stringValue
            guard let label, labels.contains(label) else {
                return .failure(FieldError(field: "label", detail: "must be one of \(labels.joined(separator: ", "))"))
            }
            return .success(.string(label))
        case .multilabel:
            guard let list = (value.arrayValue ?? value.objectValue?["labels"]?.arrayValue), list.allSatisfy({ $0.stringValue != nil }) else {
                return .failure(FieldError(field: "labels", detail: "must be an array of labels"))
            }
            let chosen = list.compactMap(\.stringValue)
            if let bad = chosen.first(where: { !labels.contains($0) }) {
                return .failure(FieldError(field: "labels", detail: "\"\(bad)\" is not one of \(labels.joined(separator: ", "))"))
            }
            // Canonical: in the dataset's label order, once each.
            return .success(.array(labels.filter(chosen.contains).map { .string($0) }))
        case .spans:
            guard let list = (value.arrayValue ?? value.objectValue?["spans"]?.arrayValue) else {
                return .failure(FieldError(field: "spans", detail: "must be an array of {start, end, label}"))
            }
            let length = text?.utf16.count ?? 0
            var spans: [(Int, Int, String)] = []
            for (i, item) in list.enumerated() {
                guard let s = item.objectValue, let start = s["start"]?.doubleValue, let end = s["end"]?.doubleValue,
                      start.rounded() == start, end.rounded() == end, let label = s["label"]?.stringValue else {
                    return .failure(FieldError(field: "spans[\(i)]", detail: "must be {\"start\": int, \"end\": int, \"label\": string}"))
                }
                guard labels.contains(label) else { return .failure(FieldError(field: "spans[\(i)].label", detail: "must be one of \(labels.joined(separator: ", "))")) }
                // Compared as doubles: a whole number past Int's range (1e300) passed the
                // check above and trapped in the conversion.
                guard start >= 0, end > start, end <= Double(length) else {
                    return .failure(FieldError(field: "spans[\(i)]", detail: "must satisfy 0 ≤ start < end ≤ \(length) (the text's length)"))
                }
                spans.append((Int(start), Int(end), label))
            }
            spans.sort { ($0.0, $0.1, $0.2) < ($1.0, $1.1, $1.2) }
            return .success(.array(spans.map { s in
                var o = JSONObject([("start", .int(s.0)), ("end", .int(s.1)), ("label", .string(s.2))])
                if let text { o.append("text", .string(Self.slice(text, s.0, s.1))) }
                return .object(o)
            }))
        }
    }

    /// The UTF-16 range of `text` as a string.
    public static func slice(_ text: String, _ start: Int, _ end: Int) -> String {
        let u = Array(text.utf16)
        guard start >= 0, end <= u.count, start < end else { return "" }
        return String(decoding: u[start..<end], as: UTF16.self)
    }
}

/// One item to label.
public struct DatasetItem: Sendable, Equatable {
    public var id: String
    public var data: JSONObject
    public var meta: JSONObject?
    public var prediction: JSONValue?

    public init(id: String, data: JSONObject, meta: JSONObject? = nil, prediction: JSONValue? = nil) {
        self.id = id
        self.data = data
        self.meta = meta
        self.prediction = prediction
    }

    public var text: String? { data["text"]?.stringValue }
    public var imageURL: String? { data["image_url"]?.stringValue }

    /// Validates one imported item against the dataset (`prediction` must be a valid label).
    public static func parse(_ value: JSONValue, for spec: DatasetSpec) -> Result<DatasetItem, InvalidEvent> {
        guard let o = value.objectValue else { return .failure(InvalidEvent([FieldError(field: "(item)", detail: "must be a JSON object")])) }
        var errors: [FieldError] = []
        for (k, _) in o where !["id", "data", "meta", "prediction"].contains(k) { errors.append(FieldError(field: k, detail: "is not a known field")) }
        let id = o["id"]?.stringValue ?? ""
        if id.isEmpty || id.unicodeScalars.count > 128 { errors.append(FieldError(field: "id", detail: "is required: a string of 1–128 characters")) }
        if let error = ControlCharacters.newIdentifierError("id", id) { errors.append(error) }
        var data = JSONObject()
        if let d = o["data"]?.objectValue {
            data = d
            let text = d["text"]?.stringValue, image = d["image_url"]?.stringValue
            if text == nil && image == nil { errors.append(FieldError(field: "data", detail: "must hold text or image_url")) }
            if d["text"] != nil && text == nil { errors.append(FieldError(field: "data.text", detail: "must be a string")) }
            if let image, !EventValidator.isHTTPURL(image) { errors.append(FieldError(field: "data.image_url", detail: "must be an http(s) URL")) }
            if spec.task == .spans && text == nil { errors.append(FieldError(field: "data.text", detail: "is required for a spans dataset")) }
            if let text, text.utf8.count > 100_000 { errors.append(FieldError(field: "data.text", detail: "must be at most 100000 bytes")) }
        } else {
            errors.append(FieldError(field: "data", detail: "is required: {\"text\": …} or {\"image_url\": …}"))
        }
        var meta: JSONObject?
        if let m = o["meta"], m != .null {
            if let obj = m.objectValue { meta = obj } else { errors.append(FieldError(field: "meta", detail: "must be an object")) }
        }
        var prediction: JSONValue?
        if let p = o["prediction"], p != .null, errors.isEmpty {
            switch spec.normalize(p, text: data["text"]?.stringValue) {
            case .success(let v): prediction = v
            case .failure(let e): errors.append(FieldError(field: "prediction." + e.field, detail: e.detail))
            }
        }
        return errors.isEmpty ? .success(DatasetItem(id: id, data: data, meta: meta, prediction: prediction)) : .failure(InvalidEvent(errors))
    }
}

extension DatasetSpec: Decodable {
    public init(from decoder: any Decoder) throws {
        var body = try FieldReader<CodingKeys>(decoder)
        let nameRule = "is required: 1–100 letters, digits, - _ or . (it is part of URLs)"
        let name = body.required(String.self, .name, otherwise: nameRule, missing: nameRule)
        if let name, !Self.isValidName(name) { body.refuse(.name, nameRule) }
        let taskRule = "must be classification, multilabel or spans"
        var task = LabelTask.classification
        if let text = body.optional(String.self, .task, otherwise: taskRule) {
            if let t = LabelTask(rawValue: text) { task = t } else { body.refuse(.task, taskRule) }
        }
        let labelsRule = "is required: 1 to 50 strings"
        let labels = body.required([String].self, .labels, otherwise: labelsRule, missing: labelsRule)
        if let labels {
            if labels.isEmpty || labels.count > 50 {
                body.refuse(.labels, labelsRule)
            } else {
                if Set(labels).count != labels.count { body.refuse(.labels, "must not repeat a label") }
                if let bad = labels.first(where: { $0.isEmpty || $0.unicodeScalars.count > 64 }) { body.refuse(.labels, "\"\(bad)\" must be 1–64 characters") }
                if let bad = labels.first(where: ControlCharacters.contains) { body.record(ControlCharacters.fieldError(body.field(.labels), bad)) }
            }
        }
        let instructionsRule = "must be a string of at most 20000 characters"
        let instructions = body.optional(String.self, .instructions, otherwise: instructionsRule)
        if let instructions, instructions.count > 20_000 { body.refuse(.instructions, instructionsRule) }
        let perItem = body.integer(.annotators_per_item, in: 1...20) ?? 1
        try body.finish()
        self.init(name: name ?? "", task: task, labels: labels ?? [], instructions: instructions, annotatorsPerItem: perItem)
    }
}
