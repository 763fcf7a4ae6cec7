#!/usr/bin/env node
// Launcher for the installed `semfreeze` command: the CLI is TypeScript, run through tsx.
import { register } from 'tsx/esm/api';

register();
await import('./semfreeze.ts');
