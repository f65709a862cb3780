/** Bearer-token check in constant time (digests of equal length, so the token's length does not leak either). */
import { createHash, timingSafeEqual } from 'node:crypto';

export function tokenChecker(token: string): (authorization: string | undefined) => boolean {
  const expected = createHash('sha256').update(token).digest();
  return (authorization) => {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
    if (!m) return false;
    return timingSafeEqual(createHash('sha256').update(m[1]).digest(), expected);
  };
}
