import { useState } from "react";
import { login } from "../api.js";
import { ErrorBox } from "../ui.jsx";

export default function Login() {
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    const form = new FormData(e.currentTarget);
    setBusy(true);
    setError(null);
    try {
      await login(form.get("username"), form.get("password"));
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  return (
    <form className="login" onSubmit={submit}>
      <h1>flowyard</h1>
      <label>
        Username
        <input name="username" autoComplete="username" required maxLength={128} autoFocus />
      </label>
      <label>
        Password
        <input name="password" type="password" autoComplete="current-password" required maxLength={1024} />
      </label>
      <button type="submit" disabled={busy}>
        Log in
      </button>
      <ErrorBox error={error} />
    </form>
  );
}
