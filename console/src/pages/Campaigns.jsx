export default function Campaigns() {
  return <p className="muted">Coming soon.</p>;
}
