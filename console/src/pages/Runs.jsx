export default function Runs() {
  return <p className="muted">Coming soon.</p>;
}
