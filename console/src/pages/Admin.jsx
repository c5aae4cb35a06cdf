export default function Admin() {
  return <p className="muted">Coming soon.</p>;
}
