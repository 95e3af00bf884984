// Scores cache-tests results the way the suite's own display does (lib/display.mjs determineTestResult):
// a required test passes only when it passed and every test it depends on passed.
// Usage: node score.mjs SUITE_DIR RESULTS.json [OTHER.json ...]
import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const [suiteDir, ...files] = process.argv.slice(2)
const load = async file => (await import(pathToFileURL(path.join(suiteDir, file)).href)).default
const suites = await load('tests/index.mjs')
const surrogate = await load('tests/surrogate-control.mjs') // CDN-only, not RFC 9111: counted apart
const byId = new Map()
for (const suite of [...suites, surrogate]) {
  for (const test of suite.tests) byId.set(test.id, { ...test, suite: suite.id })
}

function outcome (id, results) {
  const test = byId.get(id)
  const result = results[id]
  if (result === undefined) return 'untested'
  for (const dependency of test.depends_on || []) {
    if (!['pass', 'yes'].includes(outcome(dependency, results))) return 'dependency failed'
  }
  if (result[0] === 'Setup') return 'setup failed'
  if (test.kind === undefined || test.kind === 'required') return result === true ? 'pass' : 'fail'
  if (test.kind === 'optimal') return result === true ? 'pass' : 'not optimal'
  return result === true ? 'yes' : 'no'
}

const required = [...byId.values()].filter(test => test.kind === undefined || test.kind === 'required')
const rfc = required.filter(test => test.suite !== 'surrogate-control')
const optimal = [...byId.values()].filter(test => test.kind === 'optimal')
const rows = []
for (const file of files) {
  const results = JSON.parse(fs.readFileSync(file))
  const passed = tests => tests.filter(test => outcome(test.id, results) === 'pass').length
  rows.push([path.basename(file, '.json'), passed(rfc), passed(required), passed(optimal)])
}
const browserOnly = rfc.filter(test => test.browser_only).length
console.log(`| results | required, RFC 9111 (${rfc.length}, of which ${browserOnly} browser-only) | required, with Surrogate-Control (${required.length}) | optimal (${optimal.length}) |`)
console.log('|---|---:|---:|---:|')
for (const row of rows) console.log(`| ${row.join(' | ')} |`)

const ours = JSON.parse(fs.readFileSync(files[0]))
console.log(`\nRequired tests ${path.basename(files[0])} does not pass:`)
for (const test of required) {
  const verdict = outcome(test.id, ours)
  if (verdict !== 'pass') {
    const detail = Array.isArray(ours[test.id]) ? ours[test.id].join(': ') : ''
    console.log(`- ${test.id} (${verdict}) ${detail}`.trimEnd())
  }
}
