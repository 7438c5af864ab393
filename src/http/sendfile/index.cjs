// Loads the built addon; throws (caught by sluice, which keeps its buffered sender) when it was not built.
'use strict';
module.exports = require('./build/Release/sendfile.node');
