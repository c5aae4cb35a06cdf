export default function Editor() {
  return <p className="muted">Coming soon.</p>;
}
