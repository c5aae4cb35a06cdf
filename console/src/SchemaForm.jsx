// A form generated from a node type's config JSON Schema (GET /node-types): one field per
// property; strings that may hold expressions or templates are highlighted; anything the
// simple fields cannot edit (objects, lists) is edited as JSON.
import { useState } from "react";

function resolve(schema, root) {
  if (!schema) return {};
  if (schema.$ref) return resolve(root.$defs?.[schema.$ref.split("/").pop()], root);
  const options = schema.anyOf || schema.oneOf;
  if (options) {
    const real = options.filter((o) => o.type !== "null");
    if (real.length === 1) return { ...schema, ...resolve(real[0], root), anyOf: undefined, oneOf: undefined };
  }
  return schema;
}

function kindOf(s) {
  if (s.enum) return "enum";
  if (s.type === "string") return "string";
  if (s.type === "integer" || s.type === "number") return "number";
  if (s.type === "boolean") return "boolean";
  return "json";
}

const EXPRESSION_HINT = /template|expression|condition|\{\{/i;

function Field({ name, schema, required, value, onChange }) {
  const kind = kindOf(schema);
  const [text, setText] = useState(() => (value === undefined ? "" : JSON.stringify(value, null, 2)));
  const [bad, setBad] = useState(false);
  const label = (
    <>
      {schema.title || name}
      {required && " *"}
      {schema.description && <span className="reason">{schema.description}</span>}
    </>
  );
  if (kind === "boolean")
    return (
      <label className="check">
        <input type="checkbox" name={name} checked={!!(value ?? schema.default)} onChange={(e) => onChange(e.target.checked)} />
        {label}
      </label>
    );
  if (kind === "enum")
    return (
      <label>
        {label}
        <select name={name} value={value ?? ""} onChange={(e) => onChange(e.target.value || undefined)}>
          <option value="">{schema.default !== undefined ? `(default: ${schema.default})` : "—"}</option>
          {schema.enum.map((v) => (
            <option key={String(v)} value={v}>
              {String(v)}
            </option>
          ))}
        </select>
      </label>
    );
  if (kind === "string" || kind === "number") {
    const expr = kind === "string" && (EXPRESSION_HINT.test(schema.description || "") || String(value ?? "").includes("{{"));
    return (
      <label>
        {label}
        <input
          name={name}
          type={kind === "number" ? "number" : "text"}
          className={expr ? "expr" : ""}
          data-expression={expr || undefined}
          value={value ?? ""}
          placeholder={schema.default !== undefined && schema.default !== null ? String(schema.default) : ""}
          maxLength={10_000}
          onChange={(e) => {
            const v = e.target.value;
            onChange(v === "" ? undefined : kind === "number" ? Number(v) : v);
          }}
        />
      </label>
    );
  }
  return (
    <label>
      {label} <span className="muted small">(JSON)</span>
      <textarea
        name={name}
        rows={4}
        className={bad ? "invalid" : ""}
        value={text}
        maxLength={1_000_000}
        onChange={(e) => {
          setText(e.target.value);
          if (e.target.value.trim() === "") {
            setBad(false);
            onChange(undefined);
            return;
          }
          try {
            onChange(JSON.parse(e.target.value));
            setBad(false);
          } catch {
            setBad(true);
          }
        }}
      />
    </label>
  );
}

/** Fields for `schema`'s properties; `value` is the config object, `onChange(config)`. */
export default function SchemaForm({ schema, value, onChange }) {
  if (!schema) return null;
  const props = schema.properties || {};
  const required = new Set(schema.required || []);
  const names = Object.keys(props);
  if (names.length === 0) return <p className="muted small">This node type takes no config.</p>;
  return (
    <div className="schema-form">
      {names.map((name) => (
        <Field
          key={name}
          name={name}
          schema={resolve(props[name], schema)}
          required={required.has(name)}
          value={value?.[name]}
          onChange={(v) => {
            const next = { ...(value || {}) };
            if (v === undefined) delete next[name];
            else next[name] = v;
            onChange(next);
          }}
        />
      ))}
    </div>
  );
}
