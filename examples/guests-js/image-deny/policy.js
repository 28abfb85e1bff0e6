// image-deny: a task-admission policy written in JavaScript.
//
// Denies a task when its image, as written in the task config, matches one
// of the comma-separated patterns in the module's `denied` config key (a
// trailing `*` makes a pattern a prefix). Every other task is allowed.
import { configGet, log } from 'wasmdock:policy/host@0.1.0';

function patterns() {
  const raw = configGet('denied') ?? ':latest*';
  return raw
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p.length > 0);
}

function matches(pattern, image) {
  if (pattern.endsWith('*')) {
    const prefix = pattern.slice(0, -1);
    // A pattern starting with `:` or `@` looks at the tag or digest.
    return prefix.startsWith(':') || prefix.startsWith('@')
      ? image.includes(prefix)
      : image.startsWith(prefix);
  }
  return image === pattern;
}

export const taskAdmission = {
  admit(request) {
    const image = request.image;
    const hit = patterns().find((p) => matches(p, image));
    if (hit === undefined) {
      return { tag: 'allow' };
    }
    log('warn', 'image denied', [
      { key: 'image', value: image.slice(0, 200) },
      { key: 'pattern', value: hit },
    ]);
    return { tag: 'deny', val: `image ${JSON.stringify(image.slice(0, 256))} matches the denied pattern ${JSON.stringify(hit)}` };
  },
};
