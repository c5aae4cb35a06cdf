export default function Run() {
  return <p className="muted">Coming soon.</p>;
}
